#!/usr/bin/env python3
"""make_gguf_fixtures.py: writes tests/fixtures/gguf/small.gguf with the `gguf` PyPI package
(gguf.GGUFWriter, an implementation independent of shard/gguf.c) and small.expected.json,
what tests/unit/test_gguf.c must read back from it.

It also writes the seed corpus of the fuzz target (tests/fuzz/corpus/gguf): the fixture,
small hand-packed images (struct, not GGUFWriter: empty file, v2, nested arrays, custom
alignment) and truncated / corrupted variants.

Usage: python3 tests/tools/make_gguf_fixtures.py [OUTDIR [CORPUSDIR]]
       (defaults: tests/fixtures/gguf, tests/fuzz/corpus/gguf)
Deterministic: rerunning it gives identical files (checked by `git diff`).

expected.json:
  version, alignment, data_offset (absolute), file_size
  kv: [{key, type, value}] in file order. type is a GGUF value type name ("uint8", ...).
      Arrays: value = {"elem_type": name, "values": [...]}, nested arrays recursively.
      Floats are given as the exact double of the stored value; strings as UTF-8 text;
      integers beyond +-2^53 as decimal strings.
  tensors: [{name, type (ggml id), type_name, ne (ne[0] first), offset (relative to the data
      section), nbytes, fnv1a64 (hex of the FNV-1a 64 hash of the tensor's bytes)}]
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT

HERE = os.path.dirname(os.path.abspath(__file__))
OUTDIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "gguf")
CORPUS = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "fuzz", "corpus", "gguf")
ALIGN = 64

VT_NAMES = {VT.UINT8: "uint8", VT.INT8: "int8", VT.UINT16: "uint16", VT.INT16: "int16",
            VT.UINT32: "uint32", VT.INT32: "int32", VT.FLOAT32: "float32", VT.BOOL: "bool",
            VT.STRING: "string", VT.ARRAY: "array", VT.UINT64: "uint64", VT.INT64: "int64",
            VT.FLOAT64: "float64"}


def f32(x):
    return float(np.float32(x))


def jint(v):
    """Integers beyond +-2^53 as decimal strings (Jansson's json_int_t is 64-bit signed)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
        return str(v)
    return v


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def infer(v):
    return VT.get_type(v)


def expect_array(vals, sub=None):
    et = sub if sub is not None else infer(vals[0])
    out = []
    for v in vals:
        if et == VT.ARRAY:
            out.append(expect_array(v))
        elif et == VT.FLOAT32:
            out.append(f32(v))
        else:
            out.append(jint(v))
    return {"elem_type": VT_NAMES[et], "values": out}


def main():
    os.makedirs(OUTDIR, exist_ok=True)
    path = os.path.join(OUTDIR, "small.gguf")
    w = gguf.GGUFWriter(path, arch="tessera-test")
    kvs = [("general.architecture", VT.STRING, "tessera-test", None)]
    w.add_custom_alignment(ALIGN)
    kvs.append(("general.alignment", VT.UINT32, ALIGN, None))

    scalars = [
        ("test.u8", VT.UINT8, 250), ("test.i8", VT.INT8, -120),
        ("test.u16", VT.UINT16, 65000), ("test.i16", VT.INT16, -32000),
        ("test.u32", VT.UINT32, 4000000000), ("test.i32", VT.INT32, -2000000000),
        ("test.f32", VT.FLOAT32, 1e-6), ("test.bool_true", VT.BOOL, True),
        ("test.bool_false", VT.BOOL, False), ("test.str", VT.STRING, "Gemma 3 \u00e9\u4e2d\U0001F600"),
        ("test.str_empty", VT.STRING, ""), ("test.u64", VT.UINT64, 18446744073709551615),
        ("test.i64", VT.INT64, -9223372036854775808), ("test.f64", VT.FLOAT64, -2.5e-300),
    ]
    for k, t, v in scalars:
        w.add_key_value(k, v, t)
        kvs.append((k, t, f32(v) if t == VT.FLOAT32 else jint(v), None))

    arrays = [
        ("test.arr_u8", [0, 1, 255], VT.UINT8), ("test.arr_i8", [-128, 0, 127], VT.INT8),
        ("test.arr_u16", [1, 65535], VT.UINT16), ("test.arr_i16", [-32768, 32767], VT.INT16),
        ("test.arr_u32", [7, 4294967295], VT.UINT32), ("test.arr_i32", [-1, 2, -3], VT.INT32),
        ("test.arr_f32", [0.5, -1000.0, 3.14159], VT.FLOAT32),
        ("test.arr_bool", [True, False, True], VT.BOOL),
        ("test.arr_u64", [0, 18446744073709551615], VT.UINT64),
        ("test.arr_i64", [-9223372036854775808, 9223372036854775807], VT.INT64),
        ("test.arr_f64", [1.0, -0.0, 1e300], VT.FLOAT64),
        ("tokenizer.ggml.tokens", ["<pad>", "<eos>", "<bos>", "\u2581hello", "", "\u00e9"], VT.STRING),
        ("test.nested", [[1, 2, 3], [4], [5, 6]], VT.ARRAY),
        ("test.nested_str", [["a", "bc"], ["\u4e2d"]], VT.ARRAY),
        ("test.nested3", [[[1], [2, 3]], [[4, 5, 6]]], VT.ARRAY),
    ]
    for k, v, sub in arrays:
        w.add_key_value(k, v, VT.ARRAY, sub_type=sub)
        kvs.append((k, VT.ARRAY, expect_array(v, sub), None))

    rng = np.random.default_rng(1234)
    tensors = []
    t_f32 = rng.standard_normal((3, 4)).astype(np.float32)          # ne [4, 3]
    w.add_tensor("blk.0.attn_norm.weight", t_f32)
    tensors.append(("blk.0.attn_norm.weight", t_f32.tobytes(), int(QT.F32), [4, 3]))
    t_f16 = rng.standard_normal((2, 5, 7)).astype(np.float16)       # ne [7, 5, 2]
    w.add_tensor("blk.0.ffn_up.weight", t_f16)
    tensors.append(("blk.0.ffn_up.weight", t_f16.tobytes(), int(QT.F16), [7, 5, 2]))
    # Q8_0: 2 rows of 64 elements = 2 blocks of 34 bytes per row
    blocks = bytearray()
    for _ in range(4):
        blocks += struct.pack("<e", float(rng.uniform(0.01, 0.1)))
        blocks += rng.integers(-127, 128, 32, dtype=np.int8).tobytes()
    q8 = np.frombuffer(bytes(blocks), dtype=np.uint8).reshape(2, 68)
    w.add_tensor("token_embd.weight", q8, raw_dtype=QT.Q8_0)      # ne [64, 2]
    tensors.append(("token_embd.weight", bytes(blocks), int(QT.Q8_0), [64, 2]))
    t_i32 = np.arange(-5, 5, dtype=np.int32).reshape(1, 1, 2, 5)    # ne [5, 2, 1, 1]
    w.add_tensor("test.i32_4d", t_i32)
    tensors.append(("test.i32_4d", t_i32.tobytes(), int(QT.I32), [5, 2, 1, 1]))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Independent cross-check with the package's reader, and offsets for the JSON.
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    data_offset = min(t.data_offset for t in r.tensors)
    size = os.path.getsize(path)
    exp_t = []
    for name, data, ty, ne in tensors:
        rt = by_name[name]
        assert list(map(int, rt.shape)) == ne, (name, rt.shape, ne)
        assert int(rt.tensor_type) == ty
        assert rt.n_bytes == len(data)
        with open(path, "rb") as f:
            f.seek(rt.data_offset)
            assert f.read(len(data)) == data
        exp_t.append({"name": name, "type": ty, "type_name": QT(ty).name, "ne": ne,
                      "offset": int(rt.data_offset) - data_offset, "nbytes": len(data),
                      "fnv1a64": fnv1a64(data)})

    exp_kv = []
    for k, t, v, _ in kvs:
        exp_kv.append({"key": k, "type": VT_NAMES[t], "value": v})
    assert [f for f in r.fields if not f.startswith("GGUF.")] == [e["key"] for e in exp_kv]
    exp = {"version": 3, "alignment": ALIGN, "data_offset": data_offset, "file_size": size,
           "kv": exp_kv, "tensors": exp_t}
    with open(os.path.join(OUTDIR, "small.expected.json"), "w", encoding="utf-8") as f:
        json.dump(exp, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(path, size, "bytes")
    write_corpus(path)


# ---- fuzz seed corpus: hand-packed images ----

def p_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def p_hdr(version, n_t, n_kv):
    return b"GGUF" + struct.pack("<IQQ", version, n_t, n_kv)


def p_kv(key, vtype, payload):
    return p_str(key) + struct.pack("<I", vtype) + payload


def p_arr(et, items):
    return struct.pack("<IQ", et, len(items)) + b"".join(items)


def p_ti(name, ne, ty, off):
    return p_str(name) + struct.pack("<I", len(ne)) + b"".join(
        struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", ty, off)


def pad(b, a):
    return b + b"\0" * (-len(b) % a)


def image_every_type(version=3):
    kvs = [
        p_kv("a.u8", 0, b"\xfe"), p_kv("a.i8", 1, b"\x80"), p_kv("a.u16", 2, b"\x01\x02"),
        p_kv("a.i16", 3, b"\xff\xff"), p_kv("a.u32", 4, struct.pack("<I", 7)),
        p_kv("a.i32", 5, struct.pack("<i", -7)), p_kv("a.f32", 6, struct.pack("<f", 1.5)),
        p_kv("a.bool", 7, b"\x01"), p_kv("a.str", 8, p_str("h\u00e9")),
        p_kv("a.u64", 10, struct.pack("<Q", 2**64 - 1)), p_kv("a.i64", 11, struct.pack("<q", -1)),
        p_kv("a.f64", 12, struct.pack("<d", 2.5)),
        p_kv("a.arr_str", 9, p_arr(8, [p_str("x"), p_str(""), p_str("yz")])),
        p_kv("a.arr_bool", 9, p_arr(7, [b"\x00", b"\x01"])),
        p_kv("a.arr_empty", 9, p_arr(4, [])),
        p_kv("a.nested", 9, p_arr(9, [p_arr(0, [b"\x01", b"\x02"]), p_arr(8, [p_str("s")]),
                                      p_arr(9, [p_arr(12, [struct.pack("<d", 1.0)])])])),
    ]
    tis = [p_ti("t.q8_0", [32, 2], 8, 64), p_ti("t.f32", [4], 0, 0),
           p_ti("t.f16", [2, 2, 2, 2], 1, 32)]
    b = pad(p_hdr(version, len(tis), len(kvs)) + b"".join(kvs) + b"".join(tis), 32)
    return b + bytes((i * 7 + 3) & 255 for i in range(64 + 68))


def write_corpus(fixture):
    os.makedirs(CORPUS, exist_ok=True)
    with open(fixture, "rb") as f:
        fx = f.read()
    full = image_every_type()
    seeds = {
        "fixture_small.gguf": fx,
        "empty_v3.gguf": p_hdr(3, 0, 0),
        "every_type_v3.gguf": full,
        "every_type_v2.gguf": image_every_type(2),
        "align_1.gguf": p_hdr(3, 1, 1) + p_kv("general.alignment", 4, struct.pack("<I", 1)) +
                        p_ti("b", [3], 24, 0) + b"abc",
        "kv_only.gguf": p_hdr(3, 0, 1) + p_kv("k", 9, p_arr(9, [p_arr(9, [p_arr(3, [])])])),
        # truncated and corrupted variants
        "trunc_header.gguf": fx[:20],
        "trunc_kv.gguf": fx[:300],
        "trunc_infos.gguf": fx[:1500],
        "trunc_data.gguf": full[:-10],
        "bad_n_kv.gguf": full[:16] + struct.pack("<Q", 2**63) + full[24:],
        "bad_version1.gguf": full[:4] + struct.pack("<I", 1) + full[8:],
        "bad_bigendian.gguf": full[:4] + struct.pack(">I", 3) + full[8:],
        "bad_ndims.gguf": p_hdr(3, 1, 0) + p_str("t") + struct.pack("<I", 5) + b"\1" * 60,
        "bad_tensor_type.gguf": pad(p_hdr(3, 1, 0) + p_ti("t", [4], 99, 0), 32) + b"\0" * 16,
        "bad_overlap.gguf": pad(p_hdr(3, 2, 0) + p_ti("a", [8], 0, 0) + p_ti("b", [8], 0, 0),
                                32) + b"\0" * 32,
        "bad_utf8_key.gguf": p_hdr(3, 0, 1) + p_kv(b"\xed\xa0\x80", 0, b"\0"),
        "bad_dup_key.gguf": p_hdr(3, 0, 2) + p_kv("k", 0, b"\0") + p_kv("k", 0, b"\1"),
        "bad_alignment.gguf": p_hdr(3, 0, 1) + p_kv("general.alignment", 4,
                                                    struct.pack("<I", 3)),
        "bad_deep.gguf": p_hdr(3, 0, 1) + p_str("d") + struct.pack("<I", 9) +
                         struct.pack("<IQ", 9, 1) * 9 + struct.pack("<IQ", 0, 0),
    }
    total = 0
    for name, data in sorted(seeds.items()):
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
        total += len(data)
    print(CORPUS, len(seeds), "seeds,", total, "bytes")


if __name__ == "__main__":
    main()
