if(TESSERA_RPC)
  ts_add_unit_test(NAME test_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_proto.c
                   LIBS ts_proto)
endif()
