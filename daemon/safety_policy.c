/* safety_policy.c: the safety gate's policy set (safety_policy.h). */
#include "safety_policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "shieldgemma.h"
#include "tokenizer.h"

static const char *builtin_label(const char *name) {
    if (!strcmp(name, "dangerous")) return "dangerous_content";
    if (!strcmp(name, "sexual")) return "sexually_explicit";
    return name; /* violence */
}

int ts_sp_check_name(const char *name, char *err, size_t errn) {
    size_t n = strlen(name);
    if (n == 0) {
        snprintf(err, errn, "the name is empty");
        return -1;
    }
    if (n > TS_SP_NAME_MAX) {
        snprintf(err, errn, "the name '%.*s...' is longer than %d bytes", 16, name,
                 TS_SP_NAME_MAX);
        return -1;
    }
    bool ok = (name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z');
    for (size_t i = 0; ok && i < n; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-' || c == '.';
    }
    if (!ok) {
        snprintf(err, errn, "the name '%s' must start with a letter and hold only letters, "
                 "digits, '_', '-' and '.'", name);
        return -1;
    }
    if (!strcmp(name, "dangerous_content") || !strcmp(name, "sexually_explicit")) {
        snprintf(err, errn, "the name '%s' is reserved (the metrics label of a built-in policy)",
                 name);
        return -1;
    }
    return 0;
}

int ts_sp_check_text(const char *text, size_t len, char *err, size_t errn) {
    size_t bad = 0;
    if (len == 0) {
        snprintf(err, errn, "the policy text is empty");
        return -1;
    }
    if (len > TS_SP_TEXT_MAX) {
        snprintf(err, errn, "the policy text has %zu bytes (at most %d)", len, TS_SP_TEXT_MAX);
        return -1;
    }
    if (!ts_utf8_check(text, len, &bad)) {
        snprintf(err, errn, "the policy text is not valid UTF-8 (byte %zu)", bad);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
            snprintf(err, errn, "the policy text holds a control character (byte %zu)", i);
            return -1;
        }
    }
    /* the prompt is tokenized with special tokens parsed: these would change its shape */
    static const char *const ctl[] = {"<start_of_", "<end_of_", "<bos>", "<eos>", "<pad>",
                                      "<image_soft_token>"};
    for (size_t k = 0; k < sizeof ctl / sizeof ctl[0]; k++) {
        const size_t m = strlen(ctl[k]);
        for (size_t i = 0; i + m <= len; i++)
            if (!memcmp(text + i, ctl[k], m)) {
                snprintf(err, errn, "the policy text holds the control token '%s' (byte %zu)",
                         ctl[k], i);
                return -1;
            }
    }
    return 0;
}

ts_sp_set *ts_sp_ref(ts_sp_set *s) {
    if (s) atomic_fetch_add(&s->refs, 1);
    return s;
}

void ts_sp_unref(ts_sp_set *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (size_t i = 0; i < s->n; i++) ts_free(s->p[i].text);
    ts_free(s);
}

int ts_sp_find(const ts_sp_set *s, const char *name) {
    for (size_t i = 0; s && name && i < s->n; i++)
        if (!strcmp(s->p[i].name, name)) return (int)i;
    return -1;
}

void ts_sp_names(const ts_sp_set *s, char *buf, size_t n) {
    size_t at = 0;
    if (n) buf[0] = '\0';
    for (size_t i = 0; s && i < s->n && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", s->p[i].name);
}

/* "NAME=T,..." onto s. */
static int apply_thresholds(ts_sp_set *s, const char *spec, const char *where, char *err,
                            size_t errn) {
    const char *p = spec;
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) return 0;
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq) {
            snprintf(err, errn, "%s: safety-thresholds: '%.*s': expected POLICY=THRESHOLD", where,
                     (int)(end - p), p);
            return -1;
        }
        int k = -1;
        for (size_t i = 0; i < s->n; i++)
            if (strlen(s->p[i].name) == (size_t)(eq - p) &&
                !strncmp(s->p[i].name, p, (size_t)(eq - p)))
                k = (int)i;
        if (k < 0) {
            char names[TS_SP_MAX * (TS_SP_NAME_MAX + 2) + 1];
            ts_sp_names(s, names, sizeof names);
            snprintf(err, errn, "%s: safety-thresholds: unknown policy '%.*s' (%s)", where,
                     (int)(eq - p) > 64 ? 64 : (int)(eq - p), p, names);
            return -1;
        }
        char num[32];
        size_t vl = (size_t)(end - eq - 1);
        char *e = NULL;
        float v = NAN;
        if (vl > 0 && vl < sizeof num) {
            memcpy(num, eq + 1, vl);
            num[vl] = '\0';
            v = strtof(num, &e);
        }
        if (!e || *e || !(v >= 0.0f && v <= 1.0f)) {
            snprintf(err, errn, "%s: safety-thresholds: %s: threshold '%.*s' is not a number in "
                     "[0, 1]", where, s->p[k].name, (int)(vl > 32 ? 32 : vl), eq + 1);
            return -1;
        }
        s->p[k].threshold = v;
        p = end;
    }
}

/* One group of safety-policies onto s. i: its index (for messages). */
static int apply_entry(ts_sp_set *s, const config_setting_t *g, int i, const char *where,
                       char *err, size_t errn) {
    char at[TS_SP_NAME_MAX + 128];
    const int line = (int)config_setting_source_line(g);
    snprintf(at, sizeof at, "%s:%d: safety-policies[%d]", where, line, i);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        snprintf(err, errn, "%s: expected a group { name = \"...\"; text = \"...\"; threshold = "
                 "0.5; }", at);
        return -1;
    }
    const char *name = NULL, *text = NULL;
    double th = -1;
    int enabled = 1;
    bool have_th = false, have_en = false;
    for (int m = 0; m < config_setting_length(g); m++) {
        const config_setting_t *f = config_setting_get_elem(g, (unsigned)m);
        const char *fn = config_setting_name(f);
        const int t = config_setting_type(f);
        if (fn && !strcmp(fn, "name") && t == CONFIG_TYPE_STRING) {
            name = config_setting_get_string(f);
        } else if (fn && !strcmp(fn, "text") && t == CONFIG_TYPE_STRING) {
            text = config_setting_get_string(f);
        } else if (fn && !strcmp(fn, "threshold") &&
                   (t == CONFIG_TYPE_FLOAT || t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)) {
            th = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(f)
                                        : (double)config_setting_get_int64(f);
            have_th = true;
        } else if (fn && !strcmp(fn, "enabled") && t == CONFIG_TYPE_BOOL) {
            enabled = config_setting_get_bool(f);
            have_en = true;
        } else {
            snprintf(err, errn, "%s: unknown or mistyped field '%s' (name and text: strings, "
                     "threshold: a number, enabled: true or false)", at, fn ? fn : "?");
            return -1;
        }
    }
    if (!name) {
        snprintf(err, errn, "%s: no name", at);
        return -1;
    }
    char e2[256];
    if (ts_sp_check_name(name, e2, sizeof e2)) {
        snprintf(err, errn, "%s: %s", at, e2);
        return -1;
    }
    snprintf(at, sizeof at, "%s:%d: safety-policies[%d] '%s'", where, line, i, name);
    if (have_th && !(th >= 0.0 && th <= 1.0)) {
        snprintf(err, errn, "%s: threshold %g is not in [0, 1]", at, th);
        return -1;
    }
    const char *btext = ts_sg_policy_text(name);
    const int k = ts_sp_find(s, name); /* names are unique in the list (checked before) */
    if (btext) {
        if (text) {
            snprintf(err, errn, "%s: a built-in policy's text cannot be changed (give the new "
                     "text its own name)", at);
            return -1;
        }
        if (have_th) s->p[k].threshold = (float)th;
        if (have_en && !enabled) { /* remove it */
            ts_free(s->p[k].text);
            memmove(&s->p[k], &s->p[k + 1], sizeof s->p[0] * (s->n - (size_t)k - 1));
            s->n--;
        }
        return 0;
    }
    if (!text) {
        snprintf(err, errn, "%s: a custom policy needs a text", at);
        return -1;
    }
    if (ts_sp_check_text(text, strlen(text), e2, sizeof e2)) {
        snprintf(err, errn, "%s: %s", at, e2);
        return -1;
    }
    if (have_en && !enabled) return 0; /* listed but off */
    if (s->n == TS_SP_MAX) {
        snprintf(err, errn, "%s: more than %d policies (built-ins included)", at, TS_SP_MAX);
        return -1;
    }
    ts_sp_policy *p = &s->p[s->n];
    snprintf(p->name, sizeof p->name, "%s", name);
    if (!(p->text = ts_strdup(text))) {
        snprintf(err, errn, "%s: out of memory", at);
        return -1;
    }
    p->label = p->name;
    p->threshold = have_th ? (float)th : 0.5f;
    p->builtin = false;
    s->n++;
    return 0;
}

ts_sp_set *ts_sp_build(const config_setting_t *list, const char *thresholds, const char *where,
                       char *err, size_t errn) {
    ts_sp_set *s = ts_calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errn, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    size_t nd = 0;
    const ts_sg_policy *d = ts_sg_default_policies(&nd);
    for (size_t i = 0; i < nd && i < TS_SP_MAX; i++) {
        ts_sp_policy *p = &s->p[s->n];
        snprintf(p->name, sizeof p->name, "%s", d[i].name);
        if (!(p->text = ts_strdup(d[i].text))) {
            snprintf(err, errn, "out of memory");
            ts_sp_unref(s);
            return NULL;
        }
        p->label = builtin_label(d[i].name);
        p->threshold = 0.5f;
        p->builtin = true;
        s->n++;
    }
    if (list) {
        if (config_setting_type(list) != CONFIG_TYPE_LIST) {
            snprintf(err, errn, "%s:%d: safety-policies must be a list of groups: ( { name = "
                     "\"...\"; text = \"...\"; threshold = 0.5; }, ... )", where,
                     (int)config_setting_source_line(list));
            ts_sp_unref(s);
            return NULL;
        }
        const int n = config_setting_length(list);
        if (n > TS_SP_LIST_MAX) {
            snprintf(err, errn, "%s:%d: safety-policies has %d entries (at most %d)", where,
                     (int)config_setting_source_line(list), n, TS_SP_LIST_MAX);
            ts_sp_unref(s);
            return NULL;
        }
        /* duplicate names first (an entry turned off counts too) */
        for (int i = 0; i < n; i++) {
            const char *a = NULL, *b = NULL;
            config_setting_lookup_string(config_setting_get_elem(list, (unsigned)i), "name", &a);
            for (int j = 0; a && j < i; j++)
                if (config_setting_lookup_string(config_setting_get_elem(list, (unsigned)j),
                                                 "name", &b) == CONFIG_TRUE && !strcmp(a, b)) {
                    snprintf(err, errn, "%s:%d: safety-policies[%d] '%.*s': the name appears "
                             "twice (also safety-policies[%d])", where,
                             (int)config_setting_source_line(
                                 config_setting_get_elem(list, (unsigned)i)),
                             i, TS_SP_NAME_MAX, a, j);
                    ts_sp_unref(s);
                    return NULL;
                }
        }
        for (int i = 0; i < n; i++)
            if (apply_entry(s, config_setting_get_elem(list, (unsigned)i), i, where, err,
                            errn)) {
                ts_sp_unref(s);
                return NULL;
            }
        if (s->n == 0) {
            snprintf(err, errn, "%s: safety-policies: every policy is disabled (to screen no "
                     "images, configure no --safety-model and safety-fail-open = 1)", where);
            ts_sp_unref(s);
            return NULL;
        }
    }
    if (thresholds && apply_thresholds(s, thresholds, where, err, errn)) {
        ts_sp_unref(s);
        return NULL;
    }
    return s;
}
