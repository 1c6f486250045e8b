#!/usr/bin/env python3
"""make_matmul_fixtures.py: golden data for ts_matmul's activation quantizer (Q8_0), from
the `gguf` PyPI package (gguf.quants.quantize, bit-exact with ggml's quantize_row_q8_0_ref)
and numpy only; no tessera code. Used by tests/unit/test_matmul.c.

Regenerate (from the repository root):
    pip install gguf numpy            # tested with gguf 0.17+, numpy 2.x
    python3 tests/tools/make_matmul_fixtures.py [--out DIR]

Output (DIR defaults to tests/fixtures/matmul; little-endian):
    q8_0_act_in.f32    float32 activations, a multiple of 32 values: gaussian rows at
                       several magnitudes, exact round-half cases, zero blocks, one-hot
                       blocks, a negative maximum, tiny and huge values
    q8_0_act_out.bin   gguf.quants.quantize(in, Q8_0): 34-byte blocks (fp16 d | int8 qs[32])
gguf-py has no Q8_K quantizer; the test checks Q8_K against a transcription of ggml's
quantize_row_q8_K_ref instead.
"""
import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20250402


def blocks():
    rng = np.random.default_rng(SEED)
    out = []
    for scale in (1e-6, 1e-3, 0.05, 1.0, 30.0, 1e4):
        out.append(rng.standard_normal(32 * 8).astype(np.float32) * np.float32(scale))
    # Round-half cases: amax = 127 gives d = 1, id = 1, so x*id = k + 0.5 exactly.
    b = np.arange(-16, 16, dtype=np.float32) + np.float32(0.5)
    b[0] = -127.0
    out.append(b)
    b = -(np.arange(32, dtype=np.float32) * np.float32(3.5))
    b[5] = 127.0
    out.append(b)
    out.append(np.zeros(32, dtype=np.float32))           # d = 0
    b = np.zeros(32, dtype=np.float32); b[7] = -2.75     # one-hot, negative
    out.append(b)
    b = np.full(32, 1e-30, dtype=np.float32); b[3] = -3e-30  # subnormal d in fp16 -> 0
    out.append(b)
    out.append(rng.uniform(-1, 1, 32 * 16).astype(np.float32))
    return np.concatenate(out).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join("tests", "fixtures", "matmul"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    x = blocks()
    assert x.size % 32 == 0
    q = quants.quantize(x.reshape(1, -1), T.Q8_0)
    x.tofile(os.path.join(args.out, "q8_0_act_in.f32"))
    np.asarray(q, dtype=np.uint8).tofile(os.path.join(args.out, "q8_0_act_out.bin"))
    print(f"{x.size} values, {q.nbytes} bytes")


if __name__ == "__main__":
    main()
