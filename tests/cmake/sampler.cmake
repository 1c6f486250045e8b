# Token sampler: greedy, reproducibility, statistical checks of top-k / top-p / min-p /
# temperature (seeded, deterministic), penalties, history window, validation messages,
# stop strings and hold-back.
ts_add_unit_test(NAME test_sampler SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sampler.c
                 LIBS ts_sampler m)
