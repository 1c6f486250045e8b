# Command-line tests: the tessera binary as users run it.
add_test(NAME cli_inspect COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_inspect.sh
         $<TARGET_FILE:tessera> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
set_tests_properties(cli_inspect PROPERTIES LABELS "cli" TIMEOUT 300)
add_test(NAME cli_run COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_run.sh
         $<TARGET_FILE:tessera> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
set_tests_properties(cli_run PROPERTIES LABELS "cli" TIMEOUT 600)
