# Vision: image decoding and preprocessing against Hugging Face's Gemma 3 image processor
# (tests/tools/make_image_fixtures.py), corrupt / truncated files, decompression bombs.
ts_add_unit_test(NAME test_image SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_image.c
                 LIBS ts_vision PkgConfig::JANSSON)
