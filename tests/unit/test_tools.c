/* test_tools.c: function calling helpers (daemon/tools.c): the Gemma 3 prompt preamble
 * (Google's JSON-output function-calling format), the call grammar of tool_choice
 * REQUIRED / NAMED, and recognising calls in a reply. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/alloc.h"
#include "grammar.h"
#include "tools.h"

static const ts_tool k_tools[] = {
    {"get_weather", "Current weather",
     "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}"},
    {"get_time", "Current time", ""},
};

static void test_check(void **state) {
    (void)state;
    assert_int_equal(ts_tools_check(k_tools, 2), TS_OK);
    ts_tool bad[] = {{"a b", "", ""}};
    assert_int_equal(ts_tools_check(bad, 1), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tools[0].name"));
    ts_tool dup[] = {{"f", "", ""}, {"f", "", ""}};
    assert_int_equal(ts_tools_check(dup, 2), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tools[1].name"));
    ts_tool sch[] = {{"f", "", "{\"type\":\"string\",\"pattern\":\"x\"}"}};
    assert_int_equal(ts_tools_check(sch, 1), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tools[0].parameters_json_schema: unsupported keyword 'pattern'"));
    ts_tool arr[] = {{"f", "", "[1]"}};
    assert_int_equal(ts_tools_check(arr, 1), TS_INVAL);
}

static void test_preamble(void **state) {
    (void)state;
    char *p;
    assert_int_equal(ts_tools_preamble(k_tools, 2, &p), TS_OK);
    const char *head =
        "You have access to functions. If you decide to invoke any of the function(s),\n"
        "you MUST put it in the format of\n"
        "{\"name\": function name, \"parameters\": dictionary of argument name and its value}\n"
        "\n"
        "You SHOULD NOT include any other text in the response if you call a function\n"
        "[\n  {\n    \"name\": \"get_weather\",\n    \"description\": \"Current weather\",\n";
    assert_memory_equal(p, head, strlen(head));
    assert_non_null(strstr(p, "\"name\": \"get_time\""));
    assert_int_equal(p[strlen(p) - 1], '\n');
    ts_free(p);
}

static void test_call_schema(void **state) {
    (void)state;
    char *s;
    ts_grammar *g;
    assert_int_equal(ts_tools_call_schema(k_tools, 2, NULL, &s), TS_OK);
    assert_int_equal(ts_grammar_from_json_schema(s, strlen(s), -1, &g), TS_OK);
    ts_free(s);
    const char *ok1 = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
    const char *ok2 = "{\"parameters\":{},\"name\":\"get_time\"}";
    assert_true(ts_grammar_accepts(g, ok1, strlen(ok1)));
    assert_true(ts_grammar_accepts(g, ok2, strlen(ok2)));
    const char *bad1 = "{\"name\":\"get_weather\",\"parameters\":{}}"; /* city required */
    const char *bad2 = "{\"name\":\"nope\",\"parameters\":{}}";
    assert_false(ts_grammar_accepts(g, bad1, strlen(bad1)));
    assert_false(ts_grammar_accepts(g, bad2, strlen(bad2)));
    ts_grammar_free(g);
    assert_int_equal(ts_tools_call_schema(k_tools, 2, "get_time", &s), TS_OK);
    assert_int_equal(ts_grammar_from_json_schema(s, strlen(s), -1, &g), TS_OK);
    ts_free(s);
    assert_false(ts_grammar_accepts(g, ok1, strlen(ok1)));
    assert_true(ts_grammar_accepts(g, ok2, strlen(ok2)));
    ts_grammar_free(g);
    assert_int_equal(ts_tools_call_schema(k_tools, 2, "other", &s), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tool_choice.name"));
}

static void test_parse(void **state) {
    (void)state;
    ts_tool_call c[4];
    const char *t1 = " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n";
    assert_int_equal(ts_tools_parse(t1, strlen(t1), k_tools, 2, c, 4), 1);
    assert_string_equal(c[0].name, "get_weather");
    assert_string_equal(c[0].arguments, "{\"city\":\"Paris\"}");
    ts_tool_calls_free(c, 1);
    const char *t2 = "```json\n[{\"name\":\"get_time\",\"parameters\":{}},"
                     "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Rome\"}}]\n```";
    assert_int_equal(ts_tools_parse(t2, strlen(t2), k_tools, 2, c, 4), 2);
    assert_string_equal(c[1].arguments, "{\"city\":\"Rome\"}");
    ts_tool_calls_free(c, 2);
    const char *no[] = {"Hello!", "{\"name\":\"unknown\",\"parameters\":{}}",
                        "{\"name\":\"get_time\",\"parameters\":[1]}", "{\"name\":\"get_time\"}",
                        "[{\"name\":\"get_time\",\"parameters\":{}}, 3]", "```\n```", ""};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(ts_tools_parse(no[i], strlen(no[i]), k_tools, 2, c, 4), 0);
    char *ct = ts_tools_call_text("get_weather", "{\"city\":\"Paris\"}");
    assert_string_equal(ct, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}");
    ts_free(ct);
    assert_null(ts_tools_call_text("f", "[1]"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_preamble),
        cmocka_unit_test(test_call_schema),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
