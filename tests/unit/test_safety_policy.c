/* test_safety_policy.c: the safety gate's policy set (daemon/safety_policy.c) from
 * libconfig text, as tesserad reads its config file:
 *   - no list: the three built-ins at 0.5, texts equal ShieldGemma 2's (shieldgemma.h);
 *   - custom policies are appended with their text and threshold, built-ins can be turned
 *     off or get a threshold, safety-thresholds applies afterwards to any name;
 *   - every bad entry is refused with a message naming the file, line, index and name;
 *   - the bounds (count, name and text length) hold at their edges;
 *   - text checks: control tokens, control characters, invalid UTF-8;
 *   - reference counting (ASan sees the frees).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/safety_policy.h"
#include "shieldgemma.h"

/* Builds from "safety-policies = ...;" text (NULL: no list) and thresholds. */
static ts_sp_set *build(const char *cfg_text, const char *th, char *err, size_t errn) {
    config_t c;
    config_init(&c);
    const config_setting_t *list = NULL;
    if (cfg_text) {
        if (config_read_string(&c, cfg_text) != CONFIG_TRUE) {
            snprintf(err, errn, "libconfig: %s", config_error_text(&c));
            config_destroy(&c);
            return NULL;
        }
        list = config_lookup(&c, "safety-policies");
    }
    ts_sp_set *s = ts_sp_build(list, th, "t.cfg", err, errn);
    config_destroy(&c);
    return s;
}

static void refused(const char *cfg_text, const char *th, const char *want) {
    char err[512] = "";
    ts_sp_set *s = build(cfg_text, th, err, sizeof err);
    if (s || !strstr(err, want)) {
        fprintf(stderr, "config: %s\nwanted: %s\ngot: %s\n", cfg_text ? cfg_text : "-", want,
                s ? "(accepted)" : err);
        ts_sp_unref(s);
        fail();
    }
}

static void test_builtins(void **st) {
    (void)st;
    char err[256];
    ts_sp_set *s = build(NULL, NULL, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->n, 3);
    const char *names[] = {"dangerous", "sexual", "violence"};
    const char *labels[] = {"dangerous_content", "sexually_explicit", "violence"};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(s->p[i].name, names[i]);
        assert_string_equal(s->p[i].label, labels[i]);
        assert_string_equal(s->p[i].text, ts_sg_policy_text(names[i]));
        assert_true(s->p[i].threshold == 0.5f && s->p[i].builtin);
    }
    assert_int_equal(ts_sp_find(s, "sexual"), 1);
    assert_int_equal(ts_sp_find(s, "hate"), -1);
    char buf[128];
    ts_sp_names(s, buf, sizeof buf);
    assert_string_equal(buf, "dangerous, sexual, violence");
    /* a second reference keeps it alive */
    ts_sp_set *r = ts_sp_ref(s);
    ts_sp_unref(s);
    assert_string_equal(r->p[0].name, "dangerous");
    ts_sp_unref(r);
}

static void test_custom(void **st) {
    (void)st;
    char err[256];
    ts_sp_set *s = build("safety-policies = (\n"
                         "  { name = \"sexual\"; enabled = false; },\n"
                         "  { name = \"hate\"; text = \"No Hate: none.\\nAt all.\"; threshold = 0.25; },\n"
                         "  { name = \"violence\"; threshold = 1; },\n"
                         "  { name = \"off\"; text = \"No off.\"; enabled = false; },\n"
                         "  { name = \"Weapons.v2\"; text = \"No weapons.\"; }\n"
                         ");",
                         "dangerous=0.125, Weapons.v2=0.75", err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->n, 4);
    assert_string_equal(s->p[0].name, "dangerous");
    assert_true(s->p[0].threshold == 0.125f);
    assert_string_equal(s->p[1].name, "violence");
    assert_true(s->p[1].threshold == 1.0f);
    assert_string_equal(s->p[2].name, "hate");
    assert_string_equal(s->p[2].label, "hate");
    assert_string_equal(s->p[2].text, "No Hate: none.\nAt all.");
    assert_true(s->p[2].threshold == 0.25f && !s->p[2].builtin);
    assert_string_equal(s->p[3].name, "Weapons.v2");
    assert_true(s->p[3].threshold == 0.75f);
    ts_sp_unref(s);
    /* an empty list: the built-ins */
    s = build("safety-policies = ();", NULL, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->n, 3);
    ts_sp_unref(s);
}

static void test_refusals(void **st) {
    (void)st;
    refused("safety-policies = ( { name = \"hate\"; text = \"\"; } );", NULL,
            "t.cfg:1: safety-policies[0] 'hate': the policy text is empty");
    refused("safety-policies = (\n{ name = \"a\"; text = \"x\"; },\n{ name = \"a\"; text = \"y\"; } );",
            NULL, "t.cfg:3: safety-policies[1] 'a': the name appears twice (also safety-policies[0])");
    refused("safety-policies = ( { name = \"off\"; enabled = false; text = \"x\"; }, { name = \"off\"; "
            "text = \"y\"; } );", NULL, "'off': the name appears twice");
    refused("safety-policies = ( { name = \"hate\"; text = \"x\"; threshold = -0.1; } );", NULL,
            "'hate': threshold -0.1 is not in [0, 1]");
    refused("safety-policies = ( { name = \"hate\"; text = \"x\"; threshold = 2; } );", NULL,
            "'hate': threshold 2 is not in [0, 1]");
    refused("safety-policies = ( { name = \"hate\"; text = \"x\"; threshold = \"0.5\"; } );", NULL,
            "unknown or mistyped field 'threshold'");
    refused("safety-policies = ( { name = \"hate\"; text = \"x\"; enabled = 0; } );", NULL,
            "unknown or mistyped field 'enabled'");
    refused("safety-policies = ( { text = \"x\"; } );", NULL, "safety-policies[0]: no name");
    refused("safety-policies = ( { name = \"\"; text = \"x\"; } );", NULL, "the name is empty");
    refused("safety-policies = ( { name = \"a b\"; text = \"x\"; } );", NULL,
            "the name 'a b' must start with a letter");
    refused("safety-policies = ( { name = \"dangerous_content\"; text = \"x\"; } );", NULL,
            "the name 'dangerous_content' is reserved");
    refused("safety-policies = ( { name = \"dangerous\"; text = \"x\"; } );", NULL,
            "'dangerous': a built-in policy's text cannot be changed");
    refused("safety-policies = ( { name = \"hate\"; } );", NULL, "'hate': a custom policy needs a text");
    refused("safety-policies = ( \"hate\" );", NULL, "safety-policies[0]: expected a group");
    refused("safety-policies = [ 1, 2 ];", NULL, "safety-policies must be a list of groups");
    refused("safety-policies = ( { name = \"dangerous\"; enabled = false; }, { name = \"sexual\"; "
            "enabled = false; }, { name = \"violence\"; enabled = false; } );",
            NULL, "every policy is disabled");
    refused(NULL, "violence=x", "safety-thresholds: violence: threshold 'x' is not a number");
    refused(NULL, "violence=1.01", "violence: threshold '1.01' is not a number in [0, 1]");
    refused(NULL, "violence", "'violence': expected POLICY=THRESHOLD");
    refused(NULL, "hate=0.5", "unknown policy 'hate' (dangerous, sexual, violence)");
    refused("safety-policies = ( { name = \"sexual\"; enabled = false; } );", "sexual=0.5",
            "unknown policy 'sexual' (dangerous, violence)");
}

static void test_bounds(void **st) {
    (void)st;
    char err[512];
    /* names: TS_SP_NAME_MAX bytes fit, one more does not */
    char name[TS_SP_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    name[TS_SP_NAME_MAX] = '\0';
    assert_int_equal(ts_sp_check_name(name, err, sizeof err), 0);
    name[TS_SP_NAME_MAX] = 'n';
    name[TS_SP_NAME_MAX + 1] = '\0';
    assert_int_equal(ts_sp_check_name(name, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 48 bytes"));
    /* texts: TS_SP_TEXT_MAX bytes fit, one more does not */
    char *text = malloc(TS_SP_TEXT_MAX + 2);
    assert_non_null(text);
    memset(text, 't', TS_SP_TEXT_MAX + 1);
    text[TS_SP_TEXT_MAX + 1] = '\0';
    assert_int_equal(ts_sp_check_text(text, TS_SP_TEXT_MAX, err, sizeof err), 0);
    assert_int_equal(ts_sp_check_text(text, TS_SP_TEXT_MAX + 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "has 4097 bytes (at most 4096)"));
    free(text);
    /* TS_SP_MAX policies fit (13 custom + 3 built-ins), one more does not */
    char cfg[4096];
    size_t at = (size_t)snprintf(cfg, sizeof cfg, "safety-policies = (");
    for (int i = 0; i < TS_SP_MAX - 3; i++)
        at += (size_t)snprintf(cfg + at, sizeof cfg - at, "%s{ name = \"p%d\"; text = \"No p%d.\"; }",
                               i ? "," : "", i, i);
    snprintf(cfg + at, sizeof cfg - at, ");");
    ts_sp_set *s = build(cfg, NULL, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->n, TS_SP_MAX);
    ts_sp_unref(s);
    snprintf(cfg + at, sizeof cfg - at, ",{ name = \"last\"; text = \"No.\"; });");
    refused(cfg, NULL, "safety-policies[13] 'last': more than 16 policies (built-ins included)");
    /* entries of the list (turning things off counts) */
    at = (size_t)snprintf(cfg, sizeof cfg, "safety-policies = (");
    for (int i = 0; i <= TS_SP_LIST_MAX; i++)
        at += (size_t)snprintf(cfg + at, sizeof cfg - at, "%s{ name = \"q%d\"; enabled = false; }",
                               i ? "," : "", i);
    snprintf(cfg + at, sizeof cfg - at, ");");
    refused(cfg, NULL, "safety-policies has 65 entries (at most 64)");
}

static void test_texts(void **st) {
    (void)st;
    char err[256];
    const char *ok[] = {"No X.", "Kein Hass: é ü 中文", "tab\there\nnewline", "a < b > c"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(ts_sp_check_text(ok[i], strlen(ok[i]), err, sizeof err), 0);
    struct {
        const char *t;
        const char *want;
    } bad[] = {
        {"", "empty"},
        {"x<start_of_image>", "control token '<start_of_'"},
        {"x<end_of_turn>", "control token '<end_of_'"},
        {"<bos>", "control token '<bos>'"},
        {"a<image_soft_token>", "control token '<image_soft_token>'"},
        {"bell\a", "control character (byte 4)"},
        {"del\x7f", "control character"},
        {"bad \xff utf8", "not valid UTF-8 (byte 4)"},
        {"cut \xc3", "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(ts_sp_check_text(bad[i].t, strlen(bad[i].t), err, sizeof err), -1);
        if (!strstr(err, bad[i].want)) {
            fprintf(stderr, "text %zu: wanted '%s', got '%s'\n", i, bad[i].want, err);
            fail();
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins), cmocka_unit_test(test_custom),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
