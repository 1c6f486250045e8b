/* test_proto.c: the generated protobuf-c code for tessera.v1 packs and unpacks a request
 * (presence of proto3-optional fields via synthetic oneofs), and rejects garbage. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/v1/inference.pb-c.h"

static void test_round_trip(void **state) {
    (void)state;
    Tessera__V1__GenerateRequest req = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    req.request_id = "r-1";
    req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_PROMPT;
    req.prompt = "Hello";
    sp._temperature_case = TESSERA__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE;
    sp.temperature = 0.0f; /* explicitly present zero */
    sp.max_tokens = 16;
    req.sampling = &sp;
    size_t n = tessera__v1__generate_request__get_packed_size(&req);
    uint8_t *buf = malloc(n);
    assert_int_equal(tessera__v1__generate_request__pack(&req, buf), n);
    Tessera__V1__GenerateRequest *out = tessera__v1__generate_request__unpack(NULL, n, buf);
    assert_non_null(out);
    assert_string_equal(out->request_id, "r-1");
    assert_int_equal(out->input_case, TESSERA__V1__GENERATE_REQUEST__INPUT_PROMPT);
    assert_string_equal(out->prompt, "Hello");
    assert_non_null(out->sampling);
    assert_int_equal(out->sampling->_temperature_case,
                     TESSERA__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE);
    assert_int_equal(out->sampling->_top_p_case, TESSERA__V1__SAMPLING_PARAMS___TOP_P__NOT_SET);
    assert_int_equal(out->sampling->max_tokens, 16);
    tessera__v1__generate_request__free_unpacked(out, NULL);
    free(buf);
}

static void test_garbage_rejected(void **state) {
    (void)state;
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_null(tessera__v1__generate_request__unpack(NULL, sizeof junk, junk));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_garbage_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
