/* fuzz_safety_policy.c: tesserad's safety policy set (daemon/safety_policy.c) as built from
 * a config file's `safety-policies` list. The list is made with libconfig's setting API (not
 * its text parser, which is Debian's code, not ours, and leaks on some syntax errors) from
 * the input: a first line with a safety-thresholds spec, then one line per entry with
 * tab-separated fields NAME, TEXT, THRESHOLD (a number; "s..." makes it a string), ENABLED
 * (0 / 1), EXTRA (an unknown field's name); "-" or a missing field leaves it out; a line
 * starting with '#' adds a non-group element. A set that is built must keep its
 * invariants (1..TS_SP_MAX policies, unique names, checked names and texts of the custom
 * ones, thresholds in [0, 1]); the raw input also goes through the text and name checks. */
#include <libconfig.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/safety_policy.c" /* the daemon's source: no library holds it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void add_entry(config_setting_t *list, char *line) {
    if (line[0] == '#') {
        config_setting_t *x = config_setting_add(list, NULL, CONFIG_TYPE_STRING);
        if (x) config_setting_set_string(x, line + 1);
        return;
    }
    config_setting_t *g = config_setting_add(list, NULL, CONFIG_TYPE_GROUP);
    if (!g) return;
    char *f[5] = {NULL};
    int n = 0;
    for (char *p = line; n < 5;) {
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = '\0';
        p = t + 1;
    }
    config_setting_t *x;
    if (f[0] && strcmp(f[0], "-") && (x = config_setting_add(g, "name", CONFIG_TYPE_STRING)))
        config_setting_set_string(x, f[0]);
    if (f[1] && strcmp(f[1], "-") && (x = config_setting_add(g, "text", CONFIG_TYPE_STRING)))
        config_setting_set_string(x, f[1]);
    if (f[2] && strcmp(f[2], "-")) {
        if (f[2][0] == 's') {
            if ((x = config_setting_add(g, "threshold", CONFIG_TYPE_STRING)))
                config_setting_set_string(x, f[2]);
        } else if ((x = config_setting_add(g, "threshold", CONFIG_TYPE_FLOAT))) {
            config_setting_set_float(x, strtod(f[2], NULL));
        }
    }
    if (f[3] && strcmp(f[3], "-") && (x = config_setting_add(g, "enabled", CONFIG_TYPE_BOOL)))
        config_setting_set_bool(x, f[3][0] == '1');
    if (f[4] && f[4][0] && (x = config_setting_add(g, f[4], CONFIG_TYPE_INT)))
        config_setting_set_int(x, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 16)) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char err[512];
    (void)ts_sp_check_text(s, size, err, sizeof err);
    (void)ts_sp_check_name(s, err, sizeof err);
    config_t c;
    config_init(&c);
    config_setting_t *list = NULL;
    char *line = strchr(s, '\n');
    if (line) {
        *line++ = '\0';
        list = config_setting_add(config_root_setting(&c), "safety-policies", CONFIG_TYPE_LIST);
        for (int k = 0; list && line && k < 100; k++) {
            char *next = strchr(line, '\n');
            if (next) *next++ = '\0';
            add_entry(list, line);
            line = next;
        }
    }
    ts_sp_set *set = ts_sp_build(list, s[0] ? s : NULL, "fuzz", err, sizeof err);
    if (set) {
        if (set->n == 0 || set->n > TS_SP_MAX) abort();
        for (size_t i = 0; i < set->n; i++) {
            const ts_sp_policy *p = &set->p[i];
            if (ts_sp_find(set, p->name) != (int)i) abort(); /* unique */
            if (!(p->threshold >= 0.0f && p->threshold <= 1.0f)) abort();
            if (!p->builtin && (ts_sp_check_name(p->name, err, sizeof err) ||
                                ts_sp_check_text(p->text, strlen(p->text), err, sizeof err)))
                abort();
        }
        ts_sp_unref(set);
    }
    config_destroy(&c);
    free(s);
    return 0;
}
