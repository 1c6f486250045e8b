# GGUF reader: unit tests on in-test images, a fixture written by the `gguf` Python package
# (tests/tools/make_gguf_fixtures.py), corruptions, truncations and allocation failures.
# test_real_model runs when the environment variable TESSERA_MODEL_270M names the real
# Gemma 3 270M GGUF (skipped otherwise).
ts_add_unit_test(NAME test_gguf SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_gguf.c
                 LIBS ts_model PkgConfig::JANSSON)
if(TESSERA_MODEL_270M)
  set_property(TEST test_gguf APPEND PROPERTY ENVIRONMENT
               "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
endif()
