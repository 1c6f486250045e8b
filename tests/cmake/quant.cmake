# Quantization formats: reference kernels against golden data from the `gguf` Python
# package (tests/tools/make_quant_fixtures.py -> tests/fixtures/quant).
ts_add_unit_test(NAME test_quant SOURCES unit/test_quant.c LIBS ts_kernels_cpu)

# Every tensor of the real Gemma 3 270M GGUF dequantized and hashed (label `model`; exits
# 77 = skipped when no model path is given). The path comes from -DTESSERA_MODEL_270M=...
# when set, else from the TESSERA_MODEL_270M environment variable at test time.
ts_add_unit_test(NAME test_dequant_270m SOURCES model/test_dequant_270m.c
                 LIBS ts_model OpenSSL::Crypto LABELS model)
if(TESSERA_MODEL_270M)
  set_tests_properties(test_dequant_270m PROPERTIES
                       ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
endif()

# CUDA dequantizers against the reference, bit for bit (label `gpu`; exits 77 = skipped
# where there is no GPU or driver).
if(TS_HAVE_CUDA)
  ts_add_unit_test(NAME test_cuda_dequant SOURCES gpu/test_cuda_dequant.c
                   LIBS ts_kernels_cuda ts_kernels_cpu LABELS gpu)
endif()
