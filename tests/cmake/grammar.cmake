# Structured output: JSON Schema compiler, matcher and token mask (cases labelled by the
# jsonschema package: tests/tools/make_grammar_cases.py).
ts_add_unit_test(NAME test_grammar SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_grammar.c
                 LIBS ts_grammar PkgConfig::JANSSON m)
