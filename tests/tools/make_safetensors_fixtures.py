#!/usr/bin/env python3
"""Writes the safetensors test fixtures (tests/fixtures/safetensors/) with the reference
`safetensors` package, so our reader is checked against files it did not write.

Regenerate (the output is deterministic; commit the result):
    pip install safetensors numpy ml_dtypes
    python3 tests/tools/make_safetensors_fixtures.py [OUTDIR]

Files:
  small.safetensors   F32 [2,3], F16 [4,5], BF16 [3,4], an F32 scalar, an empty F32 [0,4],
                      an I64 [3], and __metadata__
  model-00001-of-00002.safetensors, model-00002-of-00002.safetensors,
  model.safetensors.index.json
                      a 2-shard checkpoint with ShieldGemma 2 style names; shard 2 also
                      holds a tensor the weight_map does not name (readers still list it)
  expected.json       per file: metadata, and per tensor dtype, shape, shard (sharded
                      only) and the values as float32 ("values") or integers ("int_values")
"""
import json
import os
import sys

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "safetensors")

BF16 = ml_dtypes.bfloat16
DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
               np.dtype(BF16): "BF16", np.dtype(np.int64): "I64"}


def describe(arr, shard=None):
    d = {"dtype": DTYPE_NAMES[arr.dtype], "shape": list(arr.shape)}
    if arr.dtype == np.int64:
        d["int_values"] = [int(x) for x in arr.reshape(-1)]
    else:
        # float32 values are exact in JSON as Python floats (doubles); repr round-trips
        d["values"] = [float(x) for x in arr.astype(np.float32).reshape(-1)]
    if shard is not None:
        d["shard"] = shard
    return d


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20250301)
    expected = {}

    # ---- small.safetensors ----
    f16 = rng.standard_normal((4, 5)).astype(np.float16)
    f16.flat[0] = np.float16(65504.0)          # largest half
    f16.flat[1] = np.float16(-6e-08)           # subnormal half (-2^-24)
    f16.flat[2] = np.float16(-0.0)
    f16.flat[3] = np.float16(6.103515625e-05)  # smallest normal half
    bf16 = (rng.standard_normal((3, 4)) * 100).astype(BF16)
    bf16.flat[0] = BF16(3.3895313892515355e38)  # largest bfloat16
    bf16.flat[1] = BF16(-1e-39)                 # subnormal bfloat16
    small = {
        "f32": np.array([[1.0, -2.5, 3.25], [1e-30, -0.0, 123456.789]], dtype=np.float32),
        "f16": f16,
        "bf16": bf16,
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "i64": np.array([-1, 0, 2**40 + 7], dtype=np.int64),
    }
    # one key only: the Rust writer orders metadata by a randomly seeded HashMap, so
    # several keys would make the bytes differ from run to run
    small_meta = {"format": "pt"}
    save_file(small, os.path.join(OUT, "small.safetensors"), metadata=small_meta)
    expected["small.safetensors"] = {
        "metadata": small_meta,
        "tensors": {k: describe(v) for k, v in small.items()},
    }

    # ---- 2-shard checkpoint (ShieldGemma 2 style names) ----
    s1 = "model-00001-of-00002.safetensors"
    s2 = "model-00002-of-00002.safetensors"
    shard1 = {
        "model.language_model.model.embed_tokens.weight":
            rng.standard_normal((32, 8)).astype(BF16),
        "model.language_model.model.layers.0.self_attn.q_proj.weight":
            rng.standard_normal((16, 8)).astype(BF16),
        "model.language_model.model.layers.0.input_layernorm.weight":
            rng.standard_normal((8,)).astype(np.float32),
    }
    shard2 = {
        "model.vision_tower.vision_model.embeddings.patch_embedding.weight":
            rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "model.multi_modal_projector.mm_input_projection_weight":
            rng.standard_normal((16, 8)).astype(BF16),
        "model.vision_tower.vision_model.post_layernorm.bias":  # not in the weight_map
            rng.standard_normal((4,)).astype(np.float16),
    }
    save_file(shard1, os.path.join(OUT, s1), metadata={"format": "pt"})
    save_file(shard2, os.path.join(OUT, s2), metadata={"format": "pt"})
    weight_map = {k: s1 for k in shard1}
    weight_map.update({k: s2 for k in shard2
                       if k != "model.vision_tower.vision_model.post_layernorm.bias"})
    total = sum(v.nbytes for v in shard1.values()) + sum(v.nbytes for v in shard2.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    tensors = {k: describe(v, s1) for k, v in shard1.items()}
    tensors.update({k: describe(v, s2) for k, v in shard2.items()})
    expected["model.safetensors.index.json"] = {
        "metadata": {"total_size": str(total), "format": "pt"},
        "tensors": tensors,
    }

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in (s1, s2, "small.safetensors"):
        os.chmod(os.path.join(OUT, name), 0o644)  # the writer creates 0600 files


if __name__ == "__main__":
    main()
