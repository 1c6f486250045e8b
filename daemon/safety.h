/* safety.h: the daemon's ShieldGemma 2 image classifier (docs/vision.md): its own CPU
 * engine, vision encoder and tokenizer, shared by the completion-queue threads (calls are
 * serialized by a mutex: one image at a time).
 */
#ifndef TS_DAEMON_SAFETY_H
#define TS_DAEMON_SAFETY_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct ts_safety ts_safety;

/* model: the ShieldGemma 2 language model (GGUF); vision: mmproj GGUF or HF checkpoint;
 * ids: NULL, or "BOI,EOI,IMAGE,YES,NO" token ids for test vocabularies. */
ts_status ts_safety_open(const char *model, const char *vision, const char *ids, int threads,
                         ts_safety **out);
void ts_safety_close(ts_safety *s);
/* The classifier's name for verdicts (the model file's base name). */
const char *ts_safety_name(const ts_safety *s);

/* P(violation) of one encoded image (PNG/JPEG/WebP bytes) for each named policy (built-in
 * names: dangerous, sexual, violence). TS_FORMAT / TS_RANGE: a bad image; TS_NOT_FOUND: an
 * unknown policy name (message names it). Thread-safe. */
ts_status ts_safety_score(ts_safety *s, const uint8_t *img, size_t len,
                          const char *const *policies, size_t n_policies, float *scores);

#endif
