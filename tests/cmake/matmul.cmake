# Fast CPU matmul (kernels/cpu/matmul*.c) against ts_matmul_ref, every ISA path of this CPU,
# 1-3 threads; activation quantizers against gguf-py fixtures
# (tests/tools/make_matmul_fixtures.py -> tests/fixtures/matmul); the thread pool.
ts_add_unit_test(NAME test_matmul SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_matmul.c
                 LIBS ts_kernels_cpu)

# Benchmark (not a test): GB/s and GFLOP/s of ts_matmul on Gemma 3 shapes.
add_executable(bench_matmul ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_matmul.c)
target_link_libraries(bench_matmul PRIVATE ts_kernels_cpu)
ts_c_target(bench_matmul)
