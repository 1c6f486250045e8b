ts_add_unit_test(NAME test_config SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_config.c
                 LIBS ts_model)
ts_add_unit_test(NAME test_base SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_base.c
                 LIBS ts_base)
