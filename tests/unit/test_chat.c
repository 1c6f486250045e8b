/* test_chat.c: the Gemma 3 IT chat template (shard/chat.c). Expected strings follow the
 * Jinja template of the Gemma 3 IT checkpoints (see docs/tokenizer.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "chat.h"

#define MSG(r, c) {(r), (c), sizeof(c) - 1, NULL, 0}

static void expect(const ts_chat_message *m, size_t n, bool gen, bool bos, const char *want) {
    char *out;
    size_t len;
    ts_status rc = ts_chat_render(m, n, gen, bos, &out, &len);
    if (rc != TS_OK) fail_msg("render failed: %s", ts_last_error());
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    ts_free(out);
}

static void expect_error(const ts_chat_message *m, size_t n, const char *needle) {
    char *out = (char *)1;
    assert_int_equal(ts_chat_render(m, n, true, true, &out, NULL), TS_INVAL);
    assert_null(out);
    if (!strstr(ts_last_error(), needle)) fail_msg("error '%s' lacks '%s'", ts_last_error(), needle);
}

static void test_single_user(void **state) {
    (void)state;
    ts_chat_message m[] = {MSG("user", "Hello!")};
    expect(m, 1, true, true, "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n");
    expect(m, 1, false, true, "<bos><start_of_turn>user\nHello!<end_of_turn>\n");
    expect(m, 1, false, false, "<start_of_turn>user\nHello!<end_of_turn>\n");
}

static void test_system_and_turns(void **state) {
    (void)state;
    ts_chat_message m[] = {
        MSG("system", "You are helpful."), MSG("user", "  Hi  \n"), MSG("assistant", "\tHello there.\n\n"),
        MSG("user", "Bye"),
    };
    expect(m, 4, true, true,
           "<bos><start_of_turn>user\nYou are helpful.\n\nHi<end_of_turn>\n"
           "<start_of_turn>model\nHello there.<end_of_turn>\n"
           "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
    /* "model" is the same as "assistant" */
    m[2].role = "model";
    expect(m, 4, false, true,
           "<bos><start_of_turn>user\nYou are helpful.\n\nHi<end_of_turn>\n"
           "<start_of_turn>model\nHello there.<end_of_turn>\n"
           "<start_of_turn>user\nBye<end_of_turn>\n");
    /* the system text is not trimmed (as the Jinja template) */
    ts_chat_message s[] = {MSG("system", " sys "), MSG("user", "u")};
    expect(s, 2, false, true, "<bos><start_of_turn>user\n sys \n\nu<end_of_turn>\n");
}

static void test_trim_unicode(void **state) {
    (void)state;
    /* NBSP, ideographic space, line separator around; inner spaces kept */
    ts_chat_message m[] = {MSG("user", "\xC2\xA0\xE3\x80\x80 a  b \xE2\x80\xA8\n")};
    expect(m, 1, false, false, "<start_of_turn>user\na  b<end_of_turn>\n");
    ts_chat_message e[] = {MSG("user", " \n\t ")};
    expect(e, 1, false, false, "<start_of_turn>user\n<end_of_turn>\n");
    /* a non-space character ending in a continuation byte is not trimmed */
    ts_chat_message c[] = {MSG("user", "\xE4\xB8\xAD")};
    expect(c, 1, false, false, "<start_of_turn>user\n\xE4\xB8\xAD<end_of_turn>\n");
    size_t a, b;
    ts_chat_trim("", 0, &a, &b);
    assert_int_equal(a, 0);
    assert_int_equal(b, 0);
}

static void test_images(void **state) {
    (void)state;
    ts_chat_part parts[] = {
        {TS_CHAT_PART_IMAGE, NULL, 0},
        {TS_CHAT_PART_TEXT, " Describe this image. ", 21},
        {TS_CHAT_PART_IMAGE, NULL, 0},
        {TS_CHAT_PART_TEXT, "And this.", 9},
    };
    ts_chat_message m[] = {{"user", NULL, 0, parts, 4}};
    expect(m, 1, true, true,
           "<bos><start_of_turn>user\n<start_of_image>Describe this image.<start_of_image>And "
           "this.<end_of_turn>\n<start_of_turn>model\n");
    /* system given as parts: its first text part */
    ts_chat_part sp[] = {{TS_CHAT_PART_TEXT, "Be brief.", 9}, {TS_CHAT_PART_TEXT, "ignored", 7}};
    ts_chat_message m2[] = {{"system", NULL, 0, sp, 2}, MSG("user", "x")};
    expect(m2, 2, false, true, "<bos><start_of_turn>user\nBe brief.\n\nx<end_of_turn>\n");
}

static void test_errors(void **state) {
    (void)state;
    ts_chat_message two_users[] = {MSG("user", "a"), MSG("user", "b")};
    expect_error(two_users, 2, "message 1 has role 'user' but model was expected");
    ts_chat_message model_first[] = {MSG("model", "a")};
    expect_error(model_first, 1, "message 0 has role 'model' but user was expected");
    ts_chat_message sys_late[] = {MSG("user", "a"), MSG("system", "b")};
    expect_error(sys_late, 2, "system message may only come first");
    ts_chat_message bad_role[] = {MSG("tool", "a")};
    expect_error(bad_role, 1, "unknown role 'tool'");
    ts_chat_message sys_only[] = {MSG("system", "a")};
    expect_error(sys_only, 1, "needs a user message");
    ts_chat_message sys_model[] = {MSG("system", "s"), MSG("model", "a")};
    expect_error(sys_model, 2, "message 1 has role 'model'");
    expect_error(NULL, 0, "empty conversation");
    ts_chat_message no_role[] = {{NULL, "a", 1, NULL, 0}};
    expect_error(no_role, 1, "no role");
}

static void test_alloc_failure(void **state) {
    (void)state;
    ts_chat_message m[] = {MSG("system", "s"), MSG("user", "u")};
    size_t live = ts_alloc_count();
    for (long k = 0; k < 8; k++) {
        char *out = NULL;
        ts_alloc_fail_after(k);
        ts_status rc = ts_chat_render(m, 2, true, true, &out, NULL);
        ts_alloc_fail_after(-1);
        assert_true(rc == TS_OK || rc == TS_NOMEM);
        ts_free(out);
    }
    assert_int_equal(ts_alloc_count(), live);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_user), cmocka_unit_test(test_system_and_turns),
        cmocka_unit_test(test_trim_unicode), cmocka_unit_test(test_images),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests_name("chat template", tests, NULL, NULL);
}
