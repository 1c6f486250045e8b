# safetensors reader: unit tests against fixtures from the reference Python package
# (tests/tools/make_safetensors_fixtures.py) and hand-made corrupt inputs.
ts_add_unit_test(NAME test_safetensors SOURCES unit/test_safetensors.c
                 LIBS ts_model PkgConfig::JANSSON)
