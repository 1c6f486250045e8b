/* safety.c: the daemon's ShieldGemma 2 classifier (safety.h). */
#include "safety.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "engine.h"
#include "gguf.h"
#include "image.h"
#include "shieldgemma.h"
#include "tokenizer.h"
#include "vision.h"

struct ts_safety {
    pthread_mutex_t mu;
    ts_safety_remote *remote; /* the classifier runs on another rank (safety_mpi.c) */
    ts_vision *v;
    ts_engine *e;
    ts_gguf *g;
    ts_tokenizer *tok;
    ts_sg_params prm;
    float *embd; /* (n_tokens, n_embd) */
    char name[128];
    const char *name_remote;
};

void ts_safety_set_timeout(ts_safety *s, int timeout_s) {
#ifdef TS_HAVE_MPI
    if (s && s->remote) ts_safety_remote_set_timeout(s->remote, timeout_s);
#else
    (void)s;
    (void)timeout_s;
#endif
}

const char *ts_safety_where(const ts_safety *s) {
#ifdef TS_HAVE_MPI
    if (s->remote) return ts_safety_remote_where(s->remote);
#endif
    return "rank 0";
}

#ifdef TS_HAVE_MPI
ts_status ts_safety_open_remote(int32_t rank, int timeout_s, ts_safety **out) {
    *out = NULL;
    ts_safety *s = ts_calloc(1, sizeof *s);
    if (!s) return TS_FAIL(TS_NOMEM, "safety classifier");
    pthread_mutex_init(&s->mu, NULL);
    ts_status rc = ts_safety_remote_open(rank, timeout_s, &s->remote);
    if (rc != TS_OK) {
        pthread_mutex_destroy(&s->mu);
        ts_free(s);
        return rc;
    }
    s->name_remote = ts_safety_remote_name(s->remote);
    *out = s;
    return TS_OK;
}
#endif

ts_status ts_safety_open(const char *model, const char *vision, const char *ids, int threads,
                         const char *backend, int device, ts_safety **out) {
    *out = NULL;
    ts_safety *s = ts_calloc(1, sizeof *s);
    if (!s) return TS_FAIL(TS_NOMEM, "safety classifier");
    pthread_mutex_init(&s->mu, NULL);
    s->prm = ts_sg_default_params();
    ts_status rc = TS_OK;
    if (ids && sscanf(ids, "%d,%d,%d,%d,%d", &s->prm.ids.boi, &s->prm.ids.eoi, &s->prm.ids.image,
                      &s->prm.yes, &s->prm.no) != 5) {
        rc = TS_FAIL(TS_INVAL, "safety ids '%s': expected BOI,EOI,IMAGE,YES,NO", ids);
        goto fail;
    }
    ts_vision_params vp = {.n_threads = threads, .backend = backend, .device = device};
    TS_TRY_GOTO(ts_vision_load(vision, &vp, &s->v), rc, fail);
    const ts_vision_config *vc = ts_vision_get_config(s->v);
    ts_engine_params ep = {.model_path = model, .n_threads = threads, .backend = backend,
                           .device = device,
                           .n_batch = vc->n_tokens > 512 ? vc->n_tokens : 512};
    TS_TRY_GOTO(ts_engine_create(&ep, &s->e), rc, fail);
    TS_TRY_GOTO(ts_gguf_open(model, &s->g), rc, fail);
    TS_TRY_GOTO(ts_tokenizer_load(s->g, &s->tok), rc, fail);
    if ((uint32_t)vc->proj_dim != ts_engine_config(s->e)->n_embd) {
        rc = TS_FAIL(TS_FORMAT, "the vision projector outputs %d values per token, the model "
                     "takes %u", vc->proj_dim, ts_engine_config(s->e)->n_embd);
        goto fail;
    }
    s->embd = ts_malloc(sizeof(float) * (size_t)vc->n_tokens * (size_t)vc->proj_dim);
    if (!s->embd) {
        rc = TS_FAIL(TS_NOMEM, "image embeddings");
        goto fail;
    }
    const char *b = strrchr(model, '/');
    snprintf(s->name, sizeof s->name, "%s", b ? b + 1 : model);
    *out = s;
    return TS_OK;
fail:
    ts_safety_close(s);
    return rc;
}

void ts_safety_close(ts_safety *s) {
    if (!s) return;
#ifdef TS_HAVE_MPI
    ts_safety_remote_close(s->remote);
#endif
    ts_free(s->embd);
    ts_tokenizer_free(s->tok);
    ts_gguf_close(s->g);
    ts_engine_destroy(s->e);
    ts_vision_destroy(s->v);
    pthread_mutex_destroy(&s->mu);
    ts_free(s);
}

const char *ts_safety_name(const ts_safety *s) { return s->remote ? s->name_remote : s->name; }

ts_status ts_safety_score(ts_safety *s, const uint8_t *img, size_t len,
                          const char *const *texts, size_t n_texts, float *scores) {
    if (n_texts > TS_SAFETY_MAX_TEXTS)
        return TS_FAIL(TS_INVAL, "%zu policies in one call (at most %d)", n_texts,
                       TS_SAFETY_MAX_TEXTS);
    if (len > TS_SAFETY_MAX_IMAGE)
        return TS_FAIL(TS_INVAL, "an image of %zu bytes (at most %d MiB)", len,
                       TS_SAFETY_MAX_IMAGE >> 20);
    for (size_t p = 0; p < n_texts; p++)
        if (!texts[p] || !*texts[p]) return TS_FAIL(TS_INVAL, "policy %zu: empty text", p);
#ifdef TS_HAVE_MPI
    if (s->remote) {
        pthread_mutex_lock(&s->mu);
        ts_status rc = ts_safety_remote_score(s->remote, img, len, texts, n_texts, scores);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
#endif
    ts_image im;
    TS_TRY(ts_image_decode(img, len, 0, &im));
    pthread_mutex_lock(&s->mu);
    const ts_vision_config *vc = ts_vision_get_config(s->v);
    ts_status rc = ts_vision_encode_image(s->v, &im, s->embd);
    for (size_t p = 0; rc == TS_OK && p < n_texts; p++)
        rc = ts_sg_score(s->e, s->tok, s->embd, vc->n_tokens, texts[p], &s->prm, &scores[p]);
    pthread_mutex_unlock(&s->mu);
    ts_image_free(&im);
    return rc;
}
