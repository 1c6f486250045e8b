/* safety_policy.h: the safety gate's policy set (docs/daemon.md "Safety policies"):
 * ShieldGemma 2's three built-in policies plus custom ones from tesserad's config file,
 * each with the text rendered into the classifier's prompt and a threshold on P(violation).
 *
 *   safety-policies = (
 *     { name = "hate"; text = "No Hate Speech: The image shall not ..."; threshold = 0.4; },
 *     { name = "sexual"; enabled = false; },      # a built-in turned off
 *     { name = "violence"; threshold = 0.7; }     # a built-in's threshold
 *   );
 *   safety-thresholds = "dangerous=0.3,hate=0.45"; # applied after safety-policies
 *
 * A set is immutable once built and reference-counted: the gate takes a reference per
 * request, SIGHUP swaps in a new set (the old one lives until its last request is done).
 * Bounds: at most TS_SP_MAX policies, names of TS_SP_NAME_MAX bytes ([A-Za-z0-9_.-],
 * starting with a letter), texts of 1..TS_SP_TEXT_MAX bytes of UTF-8 without control
 * characters (newline and tab allowed) and without Gemma 3's control tokens.
 */
#ifndef TS_DAEMON_SAFETY_POLICY_H
#define TS_DAEMON_SAFETY_POLICY_H

#include <libconfig.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define TS_SP_MAX 16
#define TS_SP_NAME_MAX 48
#define TS_SP_TEXT_MAX 4096
#define TS_SP_LIST_MAX 64 /* entries of safety-policies (some may turn built-ins off) */

typedef struct ts_sp_policy {
    char name[TS_SP_NAME_MAX + 1];
    const char *label; /* metrics label: dangerous_content, sexually_explicit, violence, or
                        * the custom name */
    char *text;        /* owned (a copy of the built-in text for built-ins) */
    float threshold;
    bool builtin;
} ts_sp_policy;

typedef struct ts_sp_set {
    atomic_int refs;
    size_t n;
    ts_sp_policy p[TS_SP_MAX];
} ts_sp_set;

/* Builds a set: the built-ins at 0.5, then `list` (the config's safety-policies setting, or
 * NULL), then `thresholds` ("NAME=T,...", or NULL). `where` prefixes messages (the file's
 * name, or "--safety-thresholds"). NULL with a message in err (naming the entry) on error. */
ts_sp_set *ts_sp_build(const config_setting_t *list, const char *thresholds, const char *where,
                       char *err, size_t errn);
ts_sp_set *ts_sp_ref(ts_sp_set *s);
void ts_sp_unref(ts_sp_set *s);
/* The index of a policy by name, -1 if none. */
int ts_sp_find(const ts_sp_set *s, const char *name);
/* "dangerous, sexual, violence, hate" (for messages). */
void ts_sp_names(const ts_sp_set *s, char *buf, size_t n);

/* Checks a name / a policy text as above: 0, or -1 with a message in err. */
int ts_sp_check_name(const char *name, char *err, size_t errn);
int ts_sp_check_text(const char *text, size_t len, char *err, size_t errn);

#endif
