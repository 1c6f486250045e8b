/* shieldgemma.h: Gemma 3 multimodal prompt tokens and ShieldGemma 2 image safety scoring.
 * ref: ../shared/docs/gemma3-spec.md sections 6.4 and 7; docs/vision.md.
 *
 * Multimodal prompts (HF Gemma3Processor): every "<start_of_image>" in the text becomes
 * "\n\n<start_of_image>" + n_img x <image_soft_token> + "<end_of_image>\n\n". Special tokens
 * split the text, so the result equals tokenizing the text pieces between them; the
 * newlines merge with neighbouring newlines as HF's tokenizer merges them.
 *
 * ShieldGemma 2 (HF ShieldGemma2Processor / ShieldGemma2ForImageClassification): one prompt
 * per (image, policy): the processor's chat template rendered with the policy text (spec
 * 7.3), run through the Gemma 3 model with the image's soft tokens; the score is
 * P(violation) = softmax(logit[Yes], logit[No])[0] at the last position.
 */
#ifndef TS_SHIELDGEMMA_H
#define TS_SHIELDGEMMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "status.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token ids of the image markers. -1 in ts_mm_ids_lookup's input means "look up the text
 * in the vocabulary"; <image_soft_token> falls back to 0 when the vocabulary lacks it (the
 * GGUF vocab of 262144 tokens: its embedding row is never read, the soft token's is used). */
typedef struct ts_mm_ids {
    int32_t boi, eoi, image;
} ts_mm_ids;

/* Fills -1 entries of *ids from the tokenizer; TS_NOT_FOUND names a missing marker. */
ts_status ts_mm_ids_lookup(const ts_tokenizer *tok, ts_mm_ids *ids);

/* Tokenizes a prompt with image placeholders "<start_of_image>" as above. flags: ts_tokenize
 * flags of the first piece (TS_TOK_ADD_BOS); special tokens are always parsed. img_first
 * (max_images) receives the index in out of each image's first soft token; *n_images the
 * count (TS_RANGE beyond max_images). out is appended to. */
ts_status ts_mm_tokenize(const ts_tokenizer *tok, const char *text, size_t len, unsigned flags,
                         const ts_mm_ids *ids, int32_t n_img_tokens, ts_tokens *out,
                         int32_t *img_first, int32_t max_images, int32_t *n_images);

typedef struct ts_sg_policy {
    const char *name;
    const char *text;
} ts_sg_policy;

/* ShieldGemma 2's own policies ("dangerous", "sexual", "violence"; exact HF strings). */
const ts_sg_policy *ts_sg_default_policies(size_t *n);
/* The text of a default policy by name, NULL if none. */
const char *ts_sg_policy_text(const char *name);

/* The rendered prompt for one policy text (before image expansion; starts with "<bos>"):
 * a new string (ts_free). */
ts_status ts_sg_render(const char *policy_text, char **out);

typedef struct ts_sg_params {
    ts_mm_ids ids;       /* markers (-1: look up) */
    int32_t yes, no;     /* answer token ids (-1: look up "Yes" / "No") */
    bool single_bos;     /* false (default, as HF): the template's <bos> plus the
                          * tokenizer's = two BOS tokens; true: one */
    int32_t seq;         /* engine sequence slot to use (reserved and released here) */
} ts_sg_params;

/* The default parameters (everything looked up, double BOS as HF, slot 0). */
ts_sg_params ts_sg_default_params(void);

/* Token ids of the ShieldGemma 2 prompt for one policy, with n_img soft tokens starting at
 * *img_first. */
ts_status ts_sg_prompt_tokens(const ts_tokenizer *tok, const char *policy_text,
                              const ts_sg_params *p, int32_t n_img, ts_tokens *out,
                              int32_t *img_first);

/* Runs ids[0..n) with the image's soft tokens embd (n_img, n_embd) at [img_first, img_first
 * + n_img) (bidirectional among them) and returns P(Yes) from the last position's logits.
 * logits: scratch of n_vocab floats. The image block is stepped whole (n_img <= the
 * engine's n_chunk), the rest in chunks of n_chunk. */
ts_status ts_sg_score_tokens(ts_engine *e, const int32_t *ids, int32_t n, int32_t img_first,
                             int32_t n_img, const float *embd, int32_t yes, int32_t no,
                             int32_t seq, float *logits, float *p_yes);

/* Both of the above for one policy text: P(violation) of the image whose soft tokens are
 * embd (n_img, n_embd). */
ts_status ts_sg_score(ts_engine *e, const ts_tokenizer *tok, const float *embd, int32_t n_img,
                      const char *policy_text, const ts_sg_params *p, float *p_yes);

#ifdef __cplusplus
}
#endif
#endif
