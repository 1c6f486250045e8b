# tesserad end to end (label `daemon`): C clients, a python3-grpcio client, concurrency
# (200 streams), cancellation, deadlines, invalid input, queue-full, drain. Needs TESSERA_RPC.
# daemon_e2e_mpi runs the same script with every daemon as `mpirun -np 2 tesserad --pp 2`
# (labels daemon and mpi).
if(TESSERA_RPC AND TARGET tesserad)
  set(_env "")
  if(TESSERA_MODEL_270M)
    list(APPEND _env "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
  endif()
  add_test(NAME daemon_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_daemon.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_e2e PROPERTIES LABELS "daemon" TIMEOUT 1200 SKIP_RETURN_CODE 77)
  if(_env)
    set_tests_properties(daemon_e2e PROPERTIES ENVIRONMENT "${_env}")
  endif()
  if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
    add_test(NAME daemon_e2e_mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_daemon.sh
             $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
    set_tests_properties(daemon_e2e_mpi PROPERTIES LABELS "daemon;mpi" TIMEOUT 1500
                         SKIP_RETURN_CODE 77 RUN_SERIAL TRUE
                         ENVIRONMENT "${_env};TESSERA_DAEMON_RANKS=2;TESSERA_MPIRUN=${MPIEXEC_EXECUTABLE}")
  endif()
endif()
# Prefix caching end to end: shared system prompts hit the cache (usage reports cached
# tokens) and give the same outputs as with the cache off; a tiny cache evicts.
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_prefix_cache COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_prefix_cache.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad>)
  set_tests_properties(daemon_prefix_cache PROPERTIES LABELS "daemon" TIMEOUT 900)
  if(TESSERA_MODEL_270M)
    set_tests_properties(daemon_prefix_cache PROPERTIES
                         ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
  endif()
endif()
# The scheduler's sampling modes (full logits rows, the top-k prefilter, distributed greedy
# ids) give the same tokens, one at a time and concurrently.
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_sampling_modes COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_sampling_modes.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad>)
  set_tests_properties(daemon_sampling_modes PROPERTIES LABELS "daemon;mpi" TIMEOUT 600
                       RUN_SERIAL TRUE)
  if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
    set_tests_properties(daemon_sampling_modes PROPERTIES
                         ENVIRONMENT "TESSERA_MPIRUN=${MPIEXEC_EXECUTABLE}")
  endif()
endif()
