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
if(TS_HAVE_NCCL)
  # --backend cuda: GPU ranks over NCCL (scripts/gpu-check-dist.sh; needs 2+ GPUs, not in CTest)
  target_link_libraries(test_parallel PRIVATE ts_transport_nccl)
endif()
target_compile_definitions(test_parallel PRIVATE TS_TEST_DATA="${TS_TEST_DATA}")
target_include_directories(test_parallel PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
ts_c_target(test_parallel)

ts_add_mpi_test(mpi_parallel_tp2     test_parallel 2 --tp 2 --pp 1)
ts_add_mpi_test(mpi_parallel_pp2     test_parallel 2 --tp 1 --pp 2)
ts_add_mpi_test(mpi_parallel_tp2pp2  test_parallel 4 --tp 2 --pp 2)
# the four-GPU plans of issue #10 on CPU ranks: tp 4 (models with fewer KV heads refused)
# and pp 4; fixtures only (4 ranks of the real 270M on 2 cores take too long)
ts_add_mpi_test(mpi_parallel_tp4     test_parallel 4 --tp 4 --pp 1)
ts_add_mpi_test(mpi_parallel_pp4     test_parallel 4 --tp 1 --pp 4)
set_property(TEST mpi_parallel_tp4 mpi_parallel_pp4 PROPERTY ENVIRONMENT "TESSERA_MODEL_270M=")
# 3 uneven stages (and a model with fewer layers than stages: refused)
ts_add_mpi_test(mpi_parallel_pp3     test_parallel 3 --tp 1 --pp 3)
# pipeline micro-batches (greedy-id steps; auto = one per stage above): 5 for 2 stages
ts_add_mpi_test(mpi_parallel_pp2_mb5 test_parallel 2 --tp 1 --pp 2 --micro-batches 5)
# the engine's device-transport path (what NCCL takes on GPUs: no host staging, fences,
# ids / logits through backend buffers) on CPU ranks: the MPI transport's emulation
ts_add_mpi_test(mpi_parallel_tp2pp2_devpath test_parallel 4 --tp 2 --pp 2)
set_property(TEST mpi_parallel_tp2pp2_devpath APPEND PROPERTY ENVIRONMENT "TESSERA_MPI_AS_DEVICE=1")

# A rank that stops answering (SIGSTOP) or dies (SIGKILL) mid-generation: the job ends
# within seconds with a message naming the rank and the operation.
add_test(NAME mpi_kill_rank
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_kill_rank.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE})
set_tests_properties(mpi_kill_rank PROPERTIES LABELS "mpi" TIMEOUT 300 SKIP_RETURN_CODE 77)

# --gpu-mem-limit on CPU ranks: refusals (one rank, the plan) and a limit that only a split
# fits, with the same greedy tokens as one rank.
add_test(NAME mpi_mem_limit
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_mem_limit.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE})
set_tests_properties(mpi_mem_limit PROPERTIES LABELS "mpi" TIMEOUT 300 SKIP_RETURN_CODE 77)

# The automatic plan (--tp auto): -np 2 / 4 and MPMD per-rank --gpu-mem-limit give the
# same tokens as one rank with the printed (uneven) plan; refusals end every rank with the
# message; bench and tesserad (config `tp = "auto";`) too.
set(_auto_daemon "")
if(TARGET tesserad)
  set(_auto_daemon $<TARGET_FILE:tesserad>)
endif()
add_test(NAME mpi_auto_plan
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_auto_plan.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE} ${_auto_daemon})
set_tests_properties(mpi_auto_plan PROPERTIES LABELS "mpi" TIMEOUT 300 SKIP_RETURN_CODE 77)

# Two hosts in network namespaces joined by veth links (root only; skipped otherwise): the
# same tokens as one rank for pp 2 and tp 2, and a cut link ends the job within seconds.
add_test(NAME mpi_multihost
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_multihost.sh $<TARGET_FILE:tessera>
                 ${MPIEXEC_EXECUTABLE})
set_tests_properties(mpi_multihost PROPERTIES LABELS "mpi" TIMEOUT 400 SKIP_RETURN_CODE 77
                     RUN_SERIAL TRUE)
