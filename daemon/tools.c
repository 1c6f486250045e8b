/* tools.c: function calling for Gemma 3 (see tools.h). */
#include "tools.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "grammar.h"

static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return false;
    return true;
}

ts_status ts_tools_check(const ts_tool *t, size_t n) {
    if (n > TS_TOOLS_MAX) return TS_FAIL(TS_INVAL, "tools: at most %d", TS_TOOLS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!name_ok(t[i].name))
            return TS_FAIL(TS_INVAL, "tools[%zu].name: must be 1..64 characters of [A-Za-z0-9_.-]", i);
        for (size_t k = 0; k < i; k++)
            if (!strcmp(t[i].name, t[k].name))
                return TS_FAIL(TS_INVAL, "tools[%zu].name: '%s' is declared twice", i, t[i].name);
        const char *p = t[i].parameters && t[i].parameters[0] ? t[i].parameters : "{}";
        json_error_t err;
        json_t *j = json_loads(p, 0, &err);
        bool obj = j && json_is_object(j);
        json_decref(j);
        if (!obj) return TS_FAIL(TS_INVAL, "tools[%zu].parameters_json_schema: not a JSON object", i);
        ts_grammar *g;
        if (ts_grammar_from_json_schema(p, strlen(p), -1, &g) != TS_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ts_last_error());
            return TS_FAIL(TS_INVAL, "tools[%zu].parameters_json_schema: %s", i, msg);
        }
        ts_grammar_free(g);
    }
    return TS_OK;
}

static json_t *params_of(const ts_tool *t) {
    const char *p = t->parameters && t->parameters[0] ? t->parameters : "{}";
    return json_loads(p, 0, NULL);
}

ts_status ts_tools_preamble(const ts_tool *t, size_t n, char **out) {
    *out = NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_object();
        json_t *p = params_of(&t[i]);
        if (!o || !p || json_object_set_new(o, "name", json_string(t[i].name)) ||
            json_object_set_new(o, "description", json_string(t[i].description ? t[i].description : "")) ||
            json_object_set_new(o, "parameters", p) || json_array_append_new(arr, o)) {
            json_decref(o);
            json_decref(arr);
            return TS_FAIL(TS_NOMEM, "tools");
        }
    }
    char *decl = arr ? json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(arr);
    if (!decl) return TS_FAIL(TS_NOMEM, "tools");
    static const char head[] =
        "You have access to functions. If you decide to invoke any of the function(s),\n"
        "you MUST put it in the format of\n"
        "{\"name\": function name, \"parameters\": dictionary of argument name and its value}\n"
        "\n"
        "You SHOULD NOT include any other text in the response if you call a function\n";
    size_t n_out = sizeof head + strlen(decl) + 2;
    char *s = ts_malloc(n_out);
    if (!s) {
        free(decl);
        return TS_FAIL(TS_NOMEM, "tools");
    }
    snprintf(s, n_out, "%s%s\n", head, decl);
    free(decl);
    *out = s;
    return TS_OK;
}

ts_status ts_tools_call_schema(const ts_tool *t, size_t n, const char *only, char **out) {
    *out = NULL;
    json_t *alts = json_array();
    size_t k = 0;
    for (size_t i = 0; alts && i < n; i++) {
        if (only && strcmp(only, t[i].name)) continue;
        json_t *s = json_pack("{s:s, s:{s:{s:s}, s:o}, s:[s,s], s:b}", "type", "object",
                              "properties", "name", "const", t[i].name, "parameters", params_of(&t[i]),
                              "required", "name", "parameters", "additionalProperties", 0);
        if (!s || json_array_append_new(alts, s)) {
            json_decref(alts);
            return TS_FAIL(TS_NOMEM, "tools");
        }
        k++;
    }
    if (!alts) return TS_FAIL(TS_NOMEM, "tools");
    if (k == 0) {
        json_decref(alts);
        return TS_FAIL(TS_INVAL, "tool_choice.name: '%s' is not a declared tool", only ? only : "");
    }
    if (k > TS_GRAMMAR_MAX_ALTS) {
        json_decref(alts);
        return TS_FAIL(TS_INVAL, "tool_choice: REQUIRED works with at most %d tools (%zu declared)",
                       TS_GRAMMAR_MAX_ALTS, k);
    }
    json_t *root = k == 1 ? json_incref(json_array_get(alts, 0)) : json_pack("{s:O}", "anyOf", alts);
    json_decref(alts);
    char *txt = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!txt) return TS_FAIL(TS_NOMEM, "tools");
    *out = ts_strdup(txt);
    free(txt);
    return *out ? TS_OK : TS_FAIL(TS_NOMEM, "tools");
}

static bool one_call(json_t *o, const ts_tool *t, size_t n, ts_tool_call *c) {
    json_t *name = json_object_get(o, "name"), *args = json_object_get(o, "parameters");
    if (!json_is_object(o) || !json_is_string(name)) return false;
    if (!args) args = json_object_get(o, "arguments");
    if (!json_is_object(args)) return false;
    size_t i;
    for (i = 0; i < n; i++)
        if (!strcmp(t[i].name, json_string_value(name))) break;
    if (i == n) return false;
    char *a = json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER);
    c->name = ts_strdup(t[i].name);
    c->arguments = a ? ts_strdup(a) : NULL;
    free(a);
    if (!c->name || !c->arguments) {
        ts_free(c->name);
        ts_free(c->arguments);
        c->name = c->arguments = NULL;
        return false;
    }
    return true;
}

size_t ts_tools_parse(const char *text, size_t len, const ts_tool *t, size_t n,
                      ts_tool_call *calls, size_t max) {
    size_t a = 0, b = len;
    while (a < b && strchr(" \t\r\n", text[a])) a++;
    while (b > a && strchr(" \t\r\n", text[b - 1])) b--;
    /* an optional ``` fence (```json, ```tool_code, ```) */
    if (b - a >= 6 && !strncmp(text + a, "```", 3) && !strncmp(text + b - 3, "```", 3)) {
        const char *nl = memchr(text + a, '\n', b - a);
        if (!nl) return 0;
        a = (size_t)(nl - text) + 1;
        b -= 3;
    }
    json_error_t err;
    json_t *j = json_loadb(text + a, b - a, 0, &err);
    if (!j) return 0;
    size_t k = 0;
    if (json_is_array(j)) {
        size_t i;
        json_t *o;
        json_array_foreach(j, i, o) {
            if (k == max || !one_call(o, t, n, &calls[k])) {
                ts_tool_calls_free(calls, k);
                k = 0;
                break;
            }
            k++;
        }
    } else if (max > 0 && one_call(j, t, n, &calls[0])) {
        k = 1;
    }
    json_decref(j);
    return k;
}

void ts_tool_calls_free(ts_tool_call *calls, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ts_free(calls[i].name);
        ts_free(calls[i].arguments);
        calls[i].name = calls[i].arguments = NULL;
    }
}

char *ts_tools_call_text(const char *name, const char *arguments_json) {
    json_t *args = json_loads(arguments_json && arguments_json[0] ? arguments_json : "{}", 0, NULL);
    if (!json_is_object(args)) {
        json_decref(args);
        return NULL;
    }
    json_t *o = json_pack("{s:s, s:o}", "name", name, "parameters", args);
    char *s = o ? json_dumps(o, JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    char *r = s ? ts_strdup(s) : NULL;
    free(s);
    return r;
}
