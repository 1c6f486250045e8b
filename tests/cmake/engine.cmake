# The CPU engine against Hugging Face transformers (committed fixtures; no model needed).
ts_add_unit_test(NAME test_engine_hf SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/model/test_engine_hf.c
                 LIBS ts_engine PkgConfig::JANSSON LABELS unit)
# Batch invariance of the CPU fast path (what the daemon's batching relies on).
ts_add_unit_test(NAME test_batch_invariance
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_batch_invariance.c
                 LIBS ts_kernels_cpu LABELS unit)
# The fast CPU path against llama.cpp's greedy continuations on the real 270M (needs
# TESSERA_MODEL_270M; skips with 77 otherwise). See docs/engine.md.
ts_add_unit_test(NAME test_engine_llamacpp SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/model/test_engine_llamacpp.c
                 LIBS ts_engine PkgConfig::JANSSON LABELS model)
# The KV page bookkeeping and its prefix cache (refcounts, hits, eviction).
ts_add_unit_test(NAME test_kvcache SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_kvcache.c
                 LIBS ts_engine LABELS unit)
# Prefix caching in the engine: logits with a hit bit-identical to the same request
# without the cache (tiny generated model; and the real 270M, which skips with 77 without
# TESSERA_MODEL_270M).
ts_add_unit_test(NAME test_engine_prefix SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_engine_prefix.c
                 LIBS ts_engine LABELS unit)
add_test(NAME test_engine_prefix_270m COMMAND test_engine_prefix 270m)
set_tests_properties(test_engine_prefix_270m PROPERTIES LABELS model SKIP_RETURN_CODE 77 TIMEOUT 600)
# Benchmark (not a test): time to first token with and without a prefix-cache hit.
add_executable(bench_prefix ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_prefix.c)
target_link_libraries(bench_prefix PRIVATE ts_engine)
ts_c_target(bench_prefix)
