# Distributed execution (docs/distributed.md): the plan (unit) and the TP / PP engine over
# MPI against the single-rank engine (label mpi; skipped without MPI).
ts_add_unit_test(NAME test_plan SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_plan.c
                 LIBS ts_engine LABELS unit)

if(NOT MPI_C_FOUND)
  return()
endif()

# ts_add_mpi_test(name exe np args...): mpirun -np np (as root on a 2-core CI machine:
# --oversubscribe --allow-run-as-root). Exit 77 = skipped.
function(ts_add_mpi_test name exe np)
  add_test(NAME ${name}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np}
                   --oversubscribe --allow-run-as-root ${MPIEXEC_PREFLAGS}
                   $<TARGET_FILE:${exe}> ${MPIEXEC_POSTFLAGS} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS "mpi" TIMEOUT 900 SKIP_RETURN_CODE 77)
  if(TESSERA_MODEL_270M)
    set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
  endif()
endfunction()

add_executable(test_parallel ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_parallel.c)
target_link_libraries(test_parallel PRIVATE ts_transport_mpi ts_engine PkgConfig::JANSSON m)
target_compile_definitions(test_parallel PRIVATE TS_TEST_DATA="${TS_TEST_DATA}")
target_include_directories(test_parallel PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
ts_c_target(test_parallel)

ts_add_mpi_test(mpi_parallel_tp2     test_parallel 2 --tp 2 --pp 1)
ts_add_mpi_test(mpi_parallel_pp2     test_parallel 2 --tp 1 --pp 2)
ts_add_mpi_test(mpi_parallel_tp2pp2  test_parallel 4 --tp 2 --pp 2)
# 3 uneven stages (and a model with fewer layers than stages: refused)
ts_add_mpi_test(mpi_parallel_pp3     test_parallel 3 --tp 1 --pp 3)

# A rank that stops answering (SIGSTOP) or dies (SIGKILL) mid-generation: the job ends
# within seconds with a message naming the rank and the operation.
add_test(NAME mpi_kill_rank
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_kill_rank.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE})
set_tests_properties(mpi_kill_rank PROPERTIES LABELS "mpi" TIMEOUT 300 SKIP_RETURN_CODE 77)

# Two hosts in network namespaces joined by veth links (root only; skipped otherwise): the
# same tokens as one rank for pp 2 and tp 2, and a cut link ends the job within seconds.
add_test(NAME mpi_multihost
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_multihost.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE})
set_tests_properties(mpi_multihost PROPERTIES LABELS "mpi" TIMEOUT 400 SKIP_RETURN_CODE 77
                     RUN_SERIAL TRUE)
