#!/usr/bin/env python3
"""make_shieldgemma_fixtures.py: ShieldGemma 2 prompt token ids on the real Gemma 3 vocabulary,
from llama.cpp's tokenizer (llama-cpp-python, vocab only), for tests/unit/test_shieldgemma.c.

Regenerate (from the repo root):
    TESSERA_MODEL_270M=/path/gemma-3-270m-q4_k_m.gguf python3 tests/tools/make_shieldgemma_fixtures.py

For each policy the prompt is the ShieldGemma2Processor chat template rendered as in
shared/docs/gemma3-spec.md 7.3 (written out here independently of the C code), with
"<start_of_image>" replaced by HF Gemma3Processor's "\\n\\n<start_of_image>" ... "<end_of_image>\\n\\n"
WITHOUT the soft tokens; the whole string is tokenized by llama.cpp (add_bos, special tokens
parsed: HF's double BOS), then 256 image soft-token ids are inserted after <start_of_image>
(the vocabulary's <image_soft_token>, or 0 when the 262144-token GGUF vocabulary lacks it,
tessera's convention: that row is never read). Writes tests/fixtures/vision/sg_prompt_270m.json.
"""
import json
import os
import sys

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "vision", "sg_prompt_270m.json")

POLICIES = {
    "dangerous": ("No Dangerous Content: The image shall not contain content that facilitates or "
                  "encourages activities that could cause real-world harm (e.g., building firearms "
                  "and explosive devices, promotion of terrorism, instructions for suicide)."),
    "sexual": ("No Sexually Explicit content: The image shall not contain content that depicts "
               "explicit or graphic sexual acts (e.g., pornography, erotic nudity, depictions of "
               "rape or sexual assault)."),
    "violence": ("No Violence/Gore content: The image shall not contain content that depicts "
                 "shocking, sensational, or gratuitous violence (e.g., excessive blood and gore, "
                 "gratuitous violence against animals, extreme injury or moment of death)."),
    "No custom thing: the image shall not show\n\nblank lines.": None,
}
TEMPLATE = ("<bos><start_of_turn>user\n<start_of_image><start_of_turn>user\n"
            "You are a policy expert trying to help determine whether a generated or real image "
            "is in violation of the safety policy below. Your decision must very clearly follow "
            "the specific language used in the safety policy and should not include any "
            "interpretation outside of the safety policy.\n\n<BEGIN_SAFETY_POLICY>\n{policy}\n"
            "</END_SAFETY_POLICY>\n\nDoes the image violate the above policy? Your Answer must "
            "start with 'Yes' or 'No'.<end_of_turn>\n<start_of_turn>model\n")


def main():
    path = os.environ.get("TESSERA_MODEL_270M")
    if not path:
        sys.exit("set TESSERA_MODEL_270M")
    m = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    boi = m.tokenize(b"<start_of_image>", add_bos=False, special=True)
    assert len(boi) == 1, boi
    soft = m.tokenize(b"<image_soft_token>", add_bos=False, special=True)
    soft_id = soft[0] if len(soft) == 1 else 0
    cases = []
    for name, text in POLICIES.items():
        prompt = TEMPLATE.format(policy=text if text else name)
        prompt = prompt.replace("<start_of_image>", "\n\n<start_of_image><end_of_image>\n\n")
        ids = m.tokenize(prompt.encode(), add_bos=True, special=True)
        at = ids.index(boi[0]) + 1
        ids = ids[:at] + [soft_id] * 256 + ids[at:]
        cases.append({"policy": name, "ids": ids, "image_first": at})
    with open(OUT, "w") as f:
        json.dump({"generator": {"llama_cpp": llama_cpp.__version__, "model": os.path.basename(path)},
                   "cases": cases}, f)
    print("wrote", OUT, [len(c["ids"]) for c in cases], "first ids", cases[0]["ids"][:8])


if __name__ == "__main__":
    main()
