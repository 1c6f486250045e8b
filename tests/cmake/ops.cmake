# Operations (docs/operations.md): the metrics endpoint, SIGHUP reload with a stream in
# flight and JSON logs (label daemon); the deploy/ units (systemd-analyze verify) and every
# shell script of the repository (shellcheck) (label ops); cluster-check under mpirun (mpi).
if(TESSERA_RPC AND TARGET tesserad)
  # metrics registry + endpoint, log formats (unit)
  pkg_check_modules(MICROHTTPD REQUIRED IMPORTED_TARGET libmicrohttpd)
  ts_add_unit_test(NAME test_ops_unit
                   SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_ops_unit.c
                           ${PROJECT_SOURCE_DIR}/daemon/metrics.c
                   LIBS ts_base PkgConfig::MICROHTTPD PkgConfig::JANSSON Threads::Threads)
  add_test(NAME daemon_ops COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_ops.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_ops PROPERTIES LABELS "daemon" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()

# deploy/: the systemd units pass `systemd-analyze verify` (exit 77 where it cannot run);
# every shell script of the repository passes shellcheck (.shellcheckrc).
# (without TESSERA_RPC there is no tesserad: /bin/true stands in for the unit's ExecStart)
if(TARGET tesserad)
  set(_ts_daemon_exe $<TARGET_FILE:tesserad>)
else()
  set(_ts_daemon_exe /bin/true)
endif()
add_test(NAME deploy_units COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/deploy/test_units.sh
         ${CMAKE_SOURCE_DIR} ${_ts_daemon_exe})
set_tests_properties(deploy_units PROPERTIES LABELS "ops" TIMEOUT 120 SKIP_RETURN_CODE 77)
add_test(NAME shellcheck COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/deploy/test_shellcheck.sh
         ${CMAKE_SOURCE_DIR})
set_tests_properties(shellcheck PROPERTIES LABELS "ops" TIMEOUT 300 SKIP_RETURN_CODE 77)

# tessera cluster-check under a real mpirun -np 2, and tessera plan's maxima on the 27B shape.
if(MPI_C_FOUND)
  add_test(NAME mpi_cluster_check
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_cluster_check.sh $<TARGET_FILE:tessera>
                   ${MPIEXEC_EXECUTABLE})
  set_tests_properties(mpi_cluster_check PROPERTIES LABELS "mpi" TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
