# Operations (docs/operations.md): the metrics endpoint, SIGHUP reload with a stream in
# flight and JSON logs (label daemon); the deploy/ units (systemd-analyze verify) and every
# shell script of the repository (shellcheck) (label ops); cluster-check under mpirun (mpi).
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_ops COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_ops.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_ops PROPERTIES LABELS "daemon" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()
