/* shieldgemma.c: multimodal prompt tokens and ShieldGemma 2 scoring (shieldgemma.h).
 * ref: ../shared/docs/gemma3-spec.md 6.4, 7.2-7.4; HF processing_gemma3.py,
 * processing_shieldgemma2.py, modeling_shieldgemma2.py.
 */
#include "shieldgemma.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

static const char BOI_TEXT[] = "<start_of_image>";

ts_status ts_mm_ids_lookup(const ts_tokenizer *tok, ts_mm_ids *ids) {
    if (ids->boi < 0) ids->boi = ts_tokenizer_find(tok, BOI_TEXT, strlen(BOI_TEXT));
    if (ids->eoi < 0) ids->eoi = ts_tokenizer_find(tok, "<end_of_image>", 14);
    if (ids->boi < 0 || ids->eoi < 0)
        return TS_FAIL(TS_NOT_FOUND, "the vocabulary has no %s token",
                       ids->boi < 0 ? "<start_of_image>" : "<end_of_image>");
    if (ids->image < 0) {
        ids->image = ts_tokenizer_find(tok, "<image_soft_token>", 18);
        if (ids->image < 0) ids->image = 0; /* 262144-token GGUF vocab: row never read */
    }
    return TS_OK;
}

static ts_status push(ts_tokens *out, int32_t id) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 64;
        int32_t *n = ts_realloc(out->ids, sizeof(int32_t) * cap);
        if (!n) return TS_FAIL(TS_NOMEM, "token list");
        out->ids = n;
        out->cap = cap;
    }
    out->ids[out->n++] = id;
    return TS_OK;
}

/* Tokenizes a + b (concatenated) without a copy where b is empty. */
static ts_status tok2(const ts_tokenizer *tok, const char *a, size_t na, const char *b, size_t nb,
                      unsigned flags, ts_tokens *out) {
    if (!nb) return ts_tokenize(tok, a, na, flags, out);
    char *s = ts_malloc(na + nb + 1);
    if (!s) return TS_FAIL(TS_NOMEM, "prompt piece");
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    ts_status rc = ts_tokenize(tok, s, na + nb, flags, out);
    ts_free(s);
    return rc;
}

ts_status ts_mm_tokenize(const ts_tokenizer *tok, const char *text, size_t len, unsigned flags,
                         const ts_mm_ids *ids, int32_t n_img_tokens, ts_tokens *out,
                         int32_t *img_first, int32_t max_images, int32_t *n_images) {
    const size_t n0 = out->n;
    *n_images = 0;
    if (n_img_tokens <= 0) return TS_FAIL(TS_INVAL, "%d tokens per image", n_img_tokens);
    ts_status rc = TS_OK;
    const size_t bl = strlen(BOI_TEXT);
    size_t at = 0;
    bool first = true;
    for (;;) {
        /* the next placeholder at or after `at` */
        const char *hit = NULL;
        for (size_t i = at; i + bl <= len; i++)
            if (!memcmp(text + i, BOI_TEXT, bl)) {
                hit = text + i;
                break;
            }
        const size_t end = hit ? (size_t)(hit - text) : len;
        /* piece: "\n\n" after the previous image, the text, "\n\n" before the next one */
        const unsigned f = TS_TOK_PARSE_SPECIAL | (first ? (flags & TS_TOK_ADD_BOS) : 0u);
        if (first) {
            rc = tok2(tok, text + at, end - at, hit ? "\n\n" : "", hit ? 2 : 0, f, out);
        } else {
            char *s = ts_malloc(end - at + 5);
            if (!s) {
                rc = TS_FAIL(TS_NOMEM, "prompt piece");
                goto fail;
            }
            memcpy(s, "\n\n", 2);
            memcpy(s + 2, text + at, end - at);
            size_t n = 2 + end - at;
            if (hit) memcpy(s + n, "\n\n", 2), n += 2;
            rc = ts_tokenize(tok, s, n, f, out);
            ts_free(s);
        }
        if (rc != TS_OK) goto fail;
        first = false;
        if (!hit) break;
        if (*n_images >= max_images) {
            rc = TS_FAIL(TS_RANGE, "more than %d images in the prompt", max_images);
            goto fail;
        }
        TS_TRY_GOTO(push(out, ids->boi), rc, fail);
        img_first[(*n_images)++] = (int32_t)out->n;
        for (int32_t i = 0; i < n_img_tokens; i++) TS_TRY_GOTO(push(out, ids->image), rc, fail);
        TS_TRY_GOTO(push(out, ids->eoi), rc, fail);
        at = end + bl;
    }
    return TS_OK;
fail:
    out->n = n0;
    *n_images = 0;
    return rc;
}

/* ---- ShieldGemma 2 ---- */

static const ts_sg_policy g_policies[] = {
    {"dangerous",
     "No Dangerous Content: The image shall not contain content that facilitates or encourages "
     "activities that could cause real-world harm (e.g., building firearms and explosive "
     "devices, promotion of terrorism, instructions for suicide)."},
    {"sexual",
     "No Sexually Explicit content: The image shall not contain content that depicts explicit "
     "or graphic sexual acts (e.g., pornography, erotic nudity, depictions of rape or sexual "
     "assault)."},
    {"violence",
     "No Violence/Gore content: The image shall not contain content that depicts shocking, "
     "sensational, or gratuitous violence (e.g., excessive blood and gore, gratuitous violence "
     "against animals, extreme injury or moment of death)."},
};

const ts_sg_policy *ts_sg_default_policies(size_t *n) {
    *n = sizeof g_policies / sizeof g_policies[0];
    return g_policies;
}

const char *ts_sg_policy_text(const char *name) {
    for (size_t i = 0; name && i < sizeof g_policies / sizeof g_policies[0]; i++)
        if (!strcmp(g_policies[i].name, name)) return g_policies[i].text;
    return NULL;
}

/* The processor's chat template rendered for [image item, text item] (spec 7.3): a
 * "<start_of_turn>user\n" header per content item, none closing the image item. */
static const char SG_HEAD[] =
    "<bos><start_of_turn>user\n<start_of_image><start_of_turn>user\n"
    "You are a policy expert trying to help determine whether a generated or real image is in "
    "violation of the safety policy below. Your decision must very clearly follow the specific "
    "language used in the safety policy and should not include any interpretation outside of "
    "the safety policy.\n\n<BEGIN_SAFETY_POLICY>\n";
static const char SG_TAIL[] =
    "\n</END_SAFETY_POLICY>\n\nDoes the image violate the above policy? Your Answer must start "
    "with 'Yes' or 'No'.<end_of_turn>\n<start_of_turn>model\n";

ts_status ts_sg_render(const char *policy_text, char **out) {
    *out = NULL;
    if (!policy_text || !*policy_text) return TS_FAIL(TS_INVAL, "empty policy text");
    const size_t n = strlen(SG_HEAD) + strlen(policy_text) + strlen(SG_TAIL) + 1;
    char *s = ts_malloc(n);
    if (!s) return TS_FAIL(TS_NOMEM, "ShieldGemma prompt");
    snprintf(s, n, "%s%s%s", SG_HEAD, policy_text, SG_TAIL);
    *out = s;
    return TS_OK;
}

ts_sg_params ts_sg_default_params(void) {
    return (ts_sg_params){.ids = {-1, -1, -1}, .yes = -1, .no = -1, .single_bos = false, .seq = 0};
}

ts_status ts_sg_prompt_tokens(const ts_tokenizer *tok, const char *policy_text,
                              const ts_sg_params *p, int32_t n_img, ts_tokens *out,
                              int32_t *img_first) {
    ts_mm_ids ids = p->ids;
    TS_TRY(ts_mm_ids_lookup(tok, &ids));
    char *s = NULL;
    TS_TRY(ts_sg_render(policy_text, &s));
    /* HF renders the template (which writes "<bos>") and tokenizes with the default
     * add_special_tokens=True: a second BOS in front (spec 7.3) */
    int32_t n_images = 0;
    ts_status rc = ts_mm_tokenize(tok, s, strlen(s), p->single_bos ? 0u : TS_TOK_ADD_BOS, &ids,
                                  n_img, out, img_first, 1, &n_images);
    ts_free(s);
    if (rc == TS_OK && n_images != 1) rc = TS_FAIL(TS_INTERNAL, "ShieldGemma prompt without image");
    return rc;
}

ts_status ts_sg_score_tokens(ts_engine *e, const int32_t *ids, int32_t n, int32_t img_first,
                             int32_t n_img, const float *embd, int32_t yes, int32_t no,
                             int32_t seq, float *logits, float *p_yes) {
    const ts_config *c = ts_engine_config(e);
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    if (n <= 0 || img_first < 0 || n_img <= 0 || img_first + n_img > n)
        return TS_FAIL(TS_INVAL, "image block [%d, %d) outside the prompt of %d tokens",
                       img_first, img_first + n_img, n);
    if (n_img > info.n_chunk)
        return TS_FAIL(TS_INVAL, "an image of %d soft tokens does not fit one step of %d tokens "
                       "(raise n_batch / n_chunk)", n_img, info.n_chunk);
    if (yes < 0 || no < 0 || (uint32_t)yes >= c->n_vocab || (uint32_t)no >= c->n_vocab)
        return TS_FAIL(TS_INVAL, "Yes / No token ids %d / %d outside the vocabulary", yes, no);
    const int32_t chunk = info.n_chunk;
    int32_t *pos = ts_malloc(sizeof(int32_t) * (size_t)n * 3);
    const float **rows = ts_calloc((size_t)n, sizeof(float *));
    if (!pos || !rows) {
        ts_free(pos);
        ts_free(rows);
        return TS_FAIL(TS_NOMEM, "score buffers");
    }
    int32_t *sq = pos + n, *hi = pos + 2 * n;
    for (int32_t i = 0; i < n; i++) {
        pos[i] = i;
        sq[i] = seq;
        hi[i] = i;
    }
    for (int32_t i = 0; i < n_img; i++) {
        rows[img_first + i] = embd + (size_t)i * c->n_embd;
        hi[img_first + i] = img_first + n_img - 1;
    }
    ts_status rc = ts_engine_seq_reserve(e, seq, n);
    if (rc == TS_OK) {
        /* steps: [0, img_first) in chunks, the image block alone, the rest in chunks */
        int32_t at = 0;
        while (rc == TS_OK && at < n) {
            int32_t m = at < img_first ? (img_first - at < chunk ? img_first - at : chunk)
                        : at == img_first ? n_img
                                          : (n - at < chunk ? n - at : chunk);
            ts_batch b = {.n_tokens = m, .token = ids + at, .pos = pos + at, .seq = sq + at,
                          .want_logits = NULL, .embd = rows + at, .attn_hi = hi + at};
            rc = ts_engine_step(e, &b, logits);
            at += m;
        }
        ts_engine_seq_release(e, seq);
    }
    if (rc == TS_OK) {
        /* softmax over (Yes, No): P(Yes) = 1 / (1 + exp(No - Yes)) */
        const double d = (double)logits[no] - (double)logits[yes];
        *p_yes = (float)(1.0 / (1.0 + exp(d)));
    }
    ts_free(pos);
    ts_free(rows);
    return rc;
}

ts_status ts_sg_score(ts_engine *e, const ts_tokenizer *tok, const float *embd, int32_t n_img,
                      const char *policy_text, const ts_sg_params *p, float *p_yes) {
    ts_sg_params d = p ? *p : ts_sg_default_params();
    if (d.yes < 0) d.yes = ts_tokenizer_find(tok, "Yes", 3);
    if (d.no < 0) d.no = ts_tokenizer_find(tok, "No", 2);
    if (d.yes < 0 || d.no < 0)
        return TS_FAIL(TS_NOT_FOUND, "the vocabulary has no 'Yes' / 'No' token");
    ts_tokens t = {0};
    int32_t first = 0;
    ts_status rc = ts_sg_prompt_tokens(tok, policy_text, &d, n_img, &t, &first);
    float *logits = NULL;
    if (rc == TS_OK) {
        logits = ts_malloc(sizeof(float) * ts_engine_config(e)->n_vocab);
        if (!logits) rc = TS_FAIL(TS_NOMEM, "logits");
    }
    if (rc == TS_OK)
        rc = ts_sg_score_tokens(e, t.ids, (int32_t)t.n, first, n_img, embd, d.yes, d.no, d.seq,
                                logits, p_yes);
    ts_free(logits);
    ts_tokens_free(&t);
    return rc;
}
