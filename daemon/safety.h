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

/* Bounds of one scoring call (also what crosses to a safety rank). */
#define TS_SAFETY_MAX_TEXTS 32
#define TS_SAFETY_MAX_IMAGE (256 << 20)

/* model: the ShieldGemma 2 language model (GGUF); vision: mmproj GGUF or HF checkpoint;
 * ids: NULL, or "BOI,EOI,IMAGE,YES,NO" token ids for test vocabularies; backend: NULL or
 * "cpu", or "cuda" (the encoder and the language model on CUDA device `device`, beside
 * whatever else runs there). */
ts_status ts_safety_open(const char *model, const char *vision, const char *ids, int threads,
                         const char *backend, int device, ts_safety **out);
void ts_safety_close(ts_safety *s);
/* The classifier's name for verdicts (the model file's base name). */
const char *ts_safety_name(const ts_safety *s);

/* A safety rank's timeout (seconds; safety-timeout, SIGHUP); no effect in process. */
void ts_safety_set_timeout(ts_safety *s, int timeout_s);
/* Where it runs, for the plan printed at start: "rank 0" (in rank 0's process) or "rank N". */
const char *ts_safety_where(const ts_safety *s);

/* P(violation) of one encoded image (PNG/JPEG/WebP bytes) for each policy text (rendered
 * into ShieldGemma 2's prompt; safety_policy.h). TS_FORMAT / TS_RANGE: a bad image;
 * TS_INVAL: more than TS_SAFETY_MAX_TEXTS texts, an empty one, an image over
 * TS_SAFETY_MAX_IMAGE; TS_TIMEOUT / TS_UNAVAILABLE: a safety rank that does not answer.
 * Thread-safe (one image at a time). */
ts_status ts_safety_score(ts_safety *s, const uint8_t *img, size_t len,
                          const char *const *texts, size_t n_texts, float *scores);

#ifdef TS_HAVE_MPI
/* The classifier on its own rank (docs/vision.md "Where the classifier runs"), over the
 * side communicator of ts_transport_mpi_set_aside (safety_mpi.c).
 * Rank 0: a classifier whose calls go to world rank `rank`; waits (bounded) for that rank
 * to load the model and report; a call that gets no answer within timeout_s fails with
 * TS_TIMEOUT naming the rank, and later calls fail at once (TS_UNAVAILABLE) until the rank
 * answers again. */
ts_status ts_safety_open_remote(int32_t rank, int timeout_s, ts_safety **out);
/* The safety rank: loads the classifier (ts_safety_open's arguments), reports to rank 0 and
 * scores rank 0's requests until rank 0 closes its handle. 0 on a clean end. */
int ts_safety_serve_rank(const char *model, const char *vision, const char *ids, int threads,
                         const char *backend);

typedef struct ts_safety_remote ts_safety_remote;
ts_status ts_safety_remote_open(int32_t rank, int timeout_s, ts_safety_remote **out);
void ts_safety_remote_set_timeout(ts_safety_remote *r, int timeout_s);
const char *ts_safety_remote_name(const ts_safety_remote *r);
const char *ts_safety_remote_where(const ts_safety_remote *r);
ts_status ts_safety_remote_score(ts_safety_remote *r, const uint8_t *img, size_t len,
                                 const char *const *texts, size_t n_texts, float *scores);
void ts_safety_remote_close(ts_safety_remote *r);
#else
typedef struct ts_safety_remote ts_safety_remote;
#endif

#endif
