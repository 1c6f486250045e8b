#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) CPU speed on a GGUF with llama-bench's definitions, to
compare with `tessera bench` on the same machine, model and thread count.

    python3 tests/tools/bench_llamacpp_cpu.py MODEL.gguf [-p 512] [-n 128] [-t 2] [--reps 3]

ppP: one eval of P random tokens from an empty context; tgN: N evals of one token from an
empty context. Median of --reps runs after one warm-up. Prints t/s.
"""
import argparse
import random
import statistics
import time

from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.p + a.n + 16, n_batch=max(a.p, 1), n_ubatch=max(a.p, 1),
                n_threads=a.t, n_threads_batch=a.t, verbose=False, logits_all=False)
    V = llm.n_vocab()
    rng = random.Random(0)

    def pp():
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        toks = [rng.randrange(V) for _ in range(a.p)]
        t0 = time.perf_counter()
        llm.eval(toks)
        return time.perf_counter() - t0

    def tg():
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        t0 = time.perf_counter()
        for _ in range(a.n):
            llm.eval([rng.randrange(V)])
        return time.perf_counter() - t0

    import llama_cpp
    print(f"llama-cpp-python {llama_cpp.__version__}, threads {a.t}")
    if a.p:
        ts = [pp() for _ in range(a.reps + 1)][1:]
        print(f"pp{a.p}: {a.p / statistics.median(ts):.2f} t/s")
    if a.n:
        ts = [tg() for _ in range(a.reps + 1)][1:]
        print(f"tg{a.n}: {a.n / statistics.median(ts):.2f} t/s")


if __name__ == "__main__":
    main()
