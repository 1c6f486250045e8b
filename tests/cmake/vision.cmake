# Vision: image decoding and preprocessing against Hugging Face's Gemma 3 image processor
# (tests/tools/make_image_fixtures.py), corrupt / truncated files, decompression bombs.
ts_add_unit_test(NAME test_image SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_image.c
                 LIBS ts_vision PkgConfig::JANSSON)
# SigLIP encoder + projector against a tiny random HF Gemma3ForConditionalGeneration
# (tests/tools/make_vision_fixtures.py): safetensors, mmproj GGUF (F32 and F16 legacy).
ts_add_unit_test(NAME test_vision SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_vision.c
                 LIBS ts_vision)
# Multimodal prompts in the engine: logits with two images in the prompt against HF
# Gemma3ForConditionalGeneration (bidirectional attention inside each image).
ts_add_unit_test(NAME test_engine_mm SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_engine_mm.c
                 LIBS ts_engine ts_vision PkgConfig::JANSSON)
# ShieldGemma 2 scoring against HF ShieldGemma2ForImageClassification (tiny random model);
# prompt tokens against llama.cpp on the real vocabulary when TESSERA_MODEL_270M is set.
ts_add_unit_test(NAME test_shieldgemma SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_shieldgemma.c
                 LIBS ts_vision PkgConfig::JANSSON)
if(TESSERA_MODEL_270M)
  set_property(TEST test_shieldgemma APPEND PROPERTY ENVIRONMENT
               "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
endif()
# `tessera safety` (offline ShieldGemma 2 scores) on the tiny random model.
add_test(NAME cli_safety COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_safety.sh
         $<TARGET_FILE:tessera> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
set_tests_properties(cli_safety PROPERTIES LABELS "cli" TIMEOUT 300)
# tesserad CheckSafety end to end (python3-grpcio client) with the tiny ShieldGemma 2.
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_safety COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_safety.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_safety PROPERTIES LABELS "daemon" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()
# tesserad's image safety gate on Generate / GenerateStream (python3-grpcio clients).
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_safety_gate COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_safety_gate.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_safety_gate PROPERTIES LABELS "daemon" TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()
# Custom ShieldGemma 2 policies from tesserad's config (safety-policies), CheckSafety's ad-hoc
# policy texts, SIGHUP swaps of the set (python3-grpcio clients).
if(TESSERA_RPC AND TARGET tesserad)
  add_test(NAME daemon_safety_policies COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_safety_policies.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_safety_policies PROPERTIES LABELS "daemon" TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
# ShieldGemma 2 on a rank of its own under mpirun (-np 2 --safety-rank 1; -np 3 --pp 2):
# both gate outcomes, scores equal to the in-process classifier's, a stopped safety rank.
if(TESSERA_RPC AND TARGET tesserad AND MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  add_test(NAME daemon_safety_rank COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemon/test_safety_rank.sh
           $<TARGET_FILE:tessera> $<TARGET_FILE:tesserad> ${CMAKE_SOURCE_DIR})
  set_tests_properties(daemon_safety_rank PROPERTIES LABELS "daemon;mpi" TIMEOUT 300
                       SKIP_RETURN_CODE 77 RUN_SERIAL TRUE
                       ENVIRONMENT "TESSERA_MPIRUN=${MPIEXEC_EXECUTABLE}")
endif()
# The safety gate's policy set (daemon/safety_policy.c) from libconfig text: custom policies,
# built-ins off / thresholds, every refusal naming its entry, the bounds.
if(TESSERA_RPC AND TARGET tesserad)
  pkg_check_modules(LIBCONFIG REQUIRED IMPORTED_TARGET libconfig)
  ts_add_unit_test(NAME test_safety_policy
                   SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_safety_policy.c
                           ${PROJECT_SOURCE_DIR}/daemon/safety_policy.c
                   LIBS ts_vision ts_text PkgConfig::LIBCONFIG)
endif()
# Random mmproj files (tessera mkmodel --mmproj) as vision.c reads them.
ts_add_unit_test(NAME test_mkmodel_mmproj SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_mkmodel_mmproj.c
                 LIBS ts_vision)
