/* tools.h: function calling for Gemma 3 (no tool tokens: prompt format and output parsing).
 *
 * Prompt (Google's "Function calling with Gemma" guide, the JSON-output variant,
 * https://ai.google.dev/gemma/docs/capabilities/function-calling): the first user turn
 * starts with
 *
 *   You have access to functions. If you decide to invoke any of the function(s),
 *   you MUST put it in the format of
 *   {"name": function name, "parameters": dictionary of argument name and its value}
 *
 *   You SHOULD NOT include any other text in the response if you call a function
 *   [ the declarations: {"name", "description", "parameters"} as a JSON list ]
 *
 * followed by the user's text. A model turn that made calls is rendered as the calls'
 * JSON objects (one per line); a tool result is a user turn "```tool_output\n...\n```"
 * (the wrapping of Google's Gemma function-calling examples).
 *
 * Output: a reply that is such a JSON object (or a list of them, optionally in a ```json /
 * ```tool_code fence) naming a declared tool, with an object as "parameters", is a call.
 */
#ifndef TS_TOOLS_H
#define TS_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_TOOLS_MAX 64
#define TS_TOOLS_MAX_CALLS 16

typedef struct {
    const char *name, *description, *parameters; /* parameters: JSON Schema text or "" */
} ts_tool;

/* Checks names (1..64 of [A-Za-z0-9_.-], unique) and that each parameters text is a JSON
 * object compiling as a grammar. On error: TS_INVAL, message "tools[i].field: why". */
ts_status ts_tools_check(const ts_tool *t, size_t n);

/* The preamble text above (ts_free it). */
ts_status ts_tools_preamble(const ts_tool *t, size_t n, char **out);

/* The JSON Schema of a call of one of the tools (only `only` if not NULL):
 * anyOf of {"name": {"const": NAME}, "parameters": PARAMS}, both required. ts_free it. */
ts_status ts_tools_call_schema(const ts_tool *t, size_t n, const char *only, char **out);

typedef struct {
    char *name;      /* ts_free */
    char *arguments; /* compact JSON object, ts_free */
} ts_tool_call;

/* Parses a reply: the number of calls (0: not a call), filled into calls[0..max). */
size_t ts_tools_parse(const char *text, size_t len, const ts_tool *t, size_t n,
                      ts_tool_call *calls, size_t max);
void ts_tool_calls_free(ts_tool_call *calls, size_t n);

/* The JSON object text of one call, as the model writes it (for assistant turns). */
char *ts_tools_call_text(const char *name, const char *arguments_json);

#ifdef __cplusplus
}
#endif
#endif
