# The CUDA backend (label `gpu`; each test exits 77 = skipped where there is no GPU or
# driver). Plain C mains printing "N passed, N failed", registered with add_test directly
# so that they do not link cmocka (the GPU machine has none).
if(TS_HAVE_CUDA)
  # Every backend op against the CPU reference ops, every weight type.
  add_executable(test_cuda_ops ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_ops.c)
  target_include_directories(test_cuda_ops PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
  target_link_libraries(test_cuda_ops PRIVATE ts_engine ts_kernels_cuda ts_kernels_cpu)
  ts_c_target(test_cuda_ops)
  add_test(NAME test_cuda_ops COMMAND test_cuda_ops)
  set_tests_properties(test_cuda_ops PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)

  # The attention kernels (flash prefill, split-K decode, the per-(token, head) kernel) vs
  # the CPU reference on a scattered paged KV cache; the backend under each TESSERA_CUDA_ATTN.
  add_executable(test_cuda_attn ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_attn.c)
  target_include_directories(test_cuda_attn PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
  target_link_libraries(test_cuda_attn PRIVATE ts_engine ts_kernels_cuda)
  ts_c_target(test_cuda_attn)
  add_test(NAME test_cuda_attn COMMAND test_cuda_attn)
  set_tests_properties(test_cuda_attn PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900)

  # The engine on CUDA: HF fixtures, and the real 270M against the CPU reference engine
  # (TESSERA_MODEL_270M), extra models from TESSERA_CUDA_CMP_MODELS.
  add_executable(test_cuda_engine ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_engine.c)
  target_link_libraries(test_cuda_engine PRIVATE ts_engine ts_kernels_cuda PkgConfig::JANSSON)
  target_compile_definitions(test_cuda_engine PRIVATE TS_TEST_DATA="${TS_TEST_DATA}")
  target_include_directories(test_cuda_engine PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
  ts_c_target(test_cuda_engine)
  add_test(NAME test_cuda_engine COMMAND test_cuda_engine)
  set_tests_properties(test_cuda_engine PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 1200)
  if(TESSERA_MODEL_270M)
    set_tests_properties(test_cuda_engine PROPERTIES
                         ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
  endif()

  # GPU sampling: top-k / argmax kernel vs the CPU reference, the sampler on a top-k
  # prefilter vs full logits (CPU part runs everywhere), the engine's top-k step.
  add_executable(test_cuda_topk ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_topk.c)
  target_include_directories(test_cuda_topk PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
  target_link_libraries(test_cuda_topk PRIVATE ts_engine ts_kernels_cuda)
  ts_c_target(test_cuda_topk)
  add_test(NAME test_cuda_topk COMMAND test_cuda_topk)
  set_tests_properties(test_cuda_topk PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)
  # Prefix caching on CUDA (kv_copy): a hit gives the logits of the request without the
  # cache (tiny generated model; the real 270M with TESSERA_MODEL_270M).
  add_executable(test_cuda_prefix ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_prefix.c)
  target_link_libraries(test_cuda_prefix PRIVATE ts_engine ts_kernels_cuda)
  ts_c_target(test_cuda_prefix)
  add_test(NAME test_cuda_prefix COMMAND test_cuda_prefix)
  set_tests_properties(test_cuda_prefix PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)
  if(TESSERA_MODEL_270M)
    set_tests_properties(test_cuda_prefix PROPERTIES
                         ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
  endif()

  # Benchmark (not a test): GB/s of the decode kernels on the 27B shapes.
  add_executable(bench_cuda_matmul ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_cuda_matmul.c)
  target_link_libraries(bench_cuda_matmul PRIVATE ts_kernels_cuda ts_kernels_cpu)
  ts_c_target(bench_cuda_matmul)
endif()

# Vision on CUDA: the encoder + projector vs HF / the CPU, image prompts on the CUDA engine,
# ShieldGemma 2 on CUDA (tests/gpu/test_cuda_vision.c).
if(TS_HAVE_CUDA)
  add_executable(test_cuda_vision ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_vision.c)
  target_link_libraries(test_cuda_vision PRIVATE ts_vision ts_engine ts_kernels_cuda PkgConfig::JANSSON)
  target_compile_definitions(test_cuda_vision PRIVATE TS_TEST_DATA="${TS_TEST_DATA}")
  target_include_directories(test_cuda_vision PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
  ts_c_target(test_cuda_vision)
  add_test(NAME test_cuda_vision COMMAND test_cuda_vision)
  set_tests_properties(test_cuda_vision PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900)
endif()
if(TS_HAVE_CUDA)
  # Not a test: the SigLIP encoder's kernels at the real shape (scripts/gpu-check.sh).
  add_executable(bench_cuda_vision ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_cuda_vision.c)
  target_link_libraries(bench_cuda_vision PRIVATE ts_kernels_cuda ts_kernels_cpu)
  ts_c_target(bench_cuda_vision)
endif()
