# `tessera mkmodel` (shard/mkmodel.c, daemon/cmd_mkmodel.c): random-weight Gemma 3 GGUFs.
ts_add_unit_test(NAME test_mkmodel SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_mkmodel.c
                 LIBS ts_model ts_text)

if(TARGET tessera)
  # The `gguf` Python package (llama.cpp's gguf-py) reads a file the CLI wrote: metadata,
  # tensor names/types/shapes and dequantized weight statistics. Skips (77) when gguf is
  # not importable. Interpreter: ${CMAKE_SOURCE_DIR}/.venv/bin/python, else python3.
  set(_mk_py ${CMAKE_CURRENT_BINARY_DIR}/mkmodel_check.py)
  file(WRITE ${_mk_py} [=[
import sys
import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as Q
from gguf.quants import dequantize

path, want_type = sys.argv[1], sys.argv[2]
r = GGUFReader(path)
def val(k):
    f = r.fields[k]
    return f.contents()
assert val("general.architecture") == "gemma3"
assert val("general.name") == "tessera random tiny"
for k, v in {"gemma3.block_count": 8, "gemma3.embedding_length": 128,
             "gemma3.feed_forward_length": 256, "gemma3.attention.head_count": 4,
             "gemma3.attention.head_count_kv": 2, "gemma3.attention.key_length": 32,
             "gemma3.attention.value_length": 32, "gemma3.context_length": 512,
             "gemma3.attention.sliding_window": 16, "tokenizer.ggml.bos_token_id": 2,
             "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.unknown_token_id": 3,
             "tokenizer.ggml.padding_token_id": 0}.items():
    assert val(k) == v, (k, val(k), v)
assert abs(val("gemma3.attention.layer_norm_rms_epsilon") - 1e-6) < 1e-12
assert val("gemma3.rope.freq_base") == 1e6
assert val("gemma3.rope.scaling.type") == "linear"
assert val("gemma3.rope.scaling.factor") == 8.0
assert val("tokenizer.ggml.model") == "llama" and val("tokenizer.ggml.pre") == "default"
assert val("tokenizer.ggml.add_bos_token") is True
assert val("tokenizer.ggml.add_eos_token") is False
assert val("tokenizer.ggml.add_space_prefix") is False
toks = val("tokenizer.ggml.tokens")
assert len(toks) == 1024 and len(set(toks)) == 1024
assert toks[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"], toks[:4]
assert toks[105:108] == ["<start_of_turn>", "<end_of_turn>", "\n"]
assert toks[238] == "<0x00>" and toks[493] == "<0xFF>"
types = val("tokenizer.ggml.token_type")
assert types[3] == 2 and types[106] == 3 and types[238] == 6 and types[600] == 1
assert len(val("tokenizer.ggml.scores")) == 1024
qt = {"q4_0": Q.Q4_0, "q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}[want_type]
ts = {t.name: t for t in r.tensors}
assert len(ts) == 2 + 13 * 8, len(ts)
shapes = {"token_embd.weight": [128, 1024], "output_norm.weight": [128],
          "blk.0.attn_q.weight": [128, 128], "blk.0.attn_k.weight": [128, 64],
          "blk.0.attn_v.weight": [128, 64], "blk.0.attn_output.weight": [128, 128],
          "blk.0.attn_q_norm.weight": [32], "blk.0.attn_k_norm.weight": [32],
          "blk.7.ffn_gate.weight": [128, 256], "blk.7.ffn_up.weight": [128, 256],
          "blk.7.ffn_down.weight": [256, 128], "blk.7.post_ffw_norm.weight": [128],
          "blk.7.post_attention_norm.weight": [128], "blk.7.ffn_norm.weight": [128],
          "blk.7.attn_norm.weight": [128]}
for name, shape in shapes.items():
    t = ts[name]
    assert [int(x) for x in t.shape] == shape, (name, t.shape, shape)
    assert t.tensor_type == (qt if len(shape) == 2 else Q.F32), (name, t.tensor_type)
for name, std in {"token_embd.weight": 128 ** -0.5, "blk.0.attn_q.weight": 128 ** -0.5,
                  "blk.3.ffn_down.weight": 256 ** -0.5}.items():
    t = ts[name]
    x = dequantize(t.data, t.tensor_type).astype(np.float64)
    assert np.isfinite(x).all(), name
    assert abs(x.std() / std - 1) < 0.08 and abs(x.mean()) < 0.05 * std, (name, x.mean(), x.std())
x = ts["output_norm.weight"].data.astype(np.float64)
assert abs(x.mean() - 1) < 0.05 and 0.05 < x.std() < 0.15, (x.mean(), x.std())
print("gguf-py read", path, "OK:", len(ts), "tensors,", len(r.fields), "fields")
]=])
  set(_mk_sh ${CMAKE_CURRENT_BINARY_DIR}/mkmodel_py_test.sh)
  file(WRITE ${_mk_sh} [=[
#!/bin/bash
# usage: mkmodel_py_test.sh TESSERA SOURCE_DIR CHECK_PY
set -u
tessera=$1; src=$2; check=$3
py=python3
[ -x "$src/.venv/bin/python" ] && py="$src/.venv/bin/python"
if ! "$py" -c 'import gguf, numpy' 2>/dev/null; then echo "gguf not importable: skip"; exit 77; fi
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
for t in q4_0 q8_0 f16 f32; do
  "$tessera" mkmodel --size tiny --type $t --seed 11 --vocab 1024 -o "$dir/m.gguf" --force \
    >/dev/null || { echo "mkmodel $t failed"; exit 1; }
  "$py" "$check" "$dir/m.gguf" $t || { echo "gguf check failed for $t"; exit 1; }
done
]=])
  add_test(NAME mkmodel_gguf_py
           COMMAND bash ${_mk_sh} $<TARGET_FILE:tessera> ${CMAKE_SOURCE_DIR} ${_mk_py})
  set_tests_properties(mkmodel_gguf_py PROPERTIES LABELS "unit" SKIP_RETURN_CODE 77
                       TIMEOUT 300)

  # The command line: exit codes, --force, FILE.tmp + rename, determinism of the file.
  set(_mk_cli ${CMAKE_CURRENT_BINARY_DIR}/mkmodel_cli_test.sh)
  file(WRITE ${_mk_cli} [=[
#!/bin/bash
set -u
t=$1
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
expect() { # expect CODE ARGS...
  local want=$1; shift
  "$t" mkmodel "$@" >"$dir/out" 2>"$dir/err"; local rc=$?
  [ $rc -eq "$want" ] || { cat "$dir/out" "$dir/err"; fail "mkmodel $* -> $rc, want $want"; }
}
expect 0 --help
expect 2
expect 2 --size tiny --type q4_0
expect 2 --size huge --type q4_0 -o "$dir/a.gguf"
grep -q "unknown --size 'huge'" "$dir/err" || fail "no message for a bad size"
expect 2 --size tiny --type q5_k -o "$dir/a.gguf"
expect 2 --size tiny --type q4_0 --vocab 100 -o "$dir/a.gguf"
expect 2 --size tiny --type q4_0 --seed -1 -o "$dir/a.gguf"
expect 2 --size tiny --type q4_0 --bogus -o "$dir/a.gguf"
expect 2 --size tiny --type q4_0 --ctx -o "$dir/a.gguf"
expect 1 --size tiny --type q4_0 --vocab 512 -o "$dir/no/such/dir/a.gguf"
expect 0 --size tiny --type q4_0 --vocab 512 --seed 5 -o "$dir/a.gguf"
grep -q "wrote" "$dir/out" || fail "no summary"
[ -f "$dir/a.gguf" ] && [ ! -e "$dir/a.gguf.tmp" ] || fail "no rename"
expect 1 --size tiny --type q4_0 --vocab 512 -o "$dir/a.gguf"
grep -q "exists" "$dir/err" || fail "no message for an existing file"
expect 0 --size=tiny --type=q4_0 --vocab=512 --seed=5 -o "$dir/b.gguf"
cmp -s "$dir/a.gguf" "$dir/b.gguf" || fail "same seed, different files"
expect 0 --size tiny --type q4_0 --vocab 512 --seed 6 -o "$dir/b.gguf" --force
cmp -s "$dir/a.gguf" "$dir/b.gguf" && fail "different seeds, same file"
expect 2 --mmproj -o "$dir/p.gguf"
grep -q "needs --size" "$dir/err" || fail "no message for --mmproj without --size"
expect 2 --mmproj --size 4b --type q4_0 -o "$dir/p.gguf"
grep -q "f16 or f32" "$dir/err" || fail "no message for a bad --mmproj type"
expect 0 --size 27b --type q4_0 --dry-run
grep -q "file 15203" "$dir/out" || { cat "$dir/out"; fail "27b q4_0 size"; }
"$t" inspect "$dir/a.gguf" >/dev/null || fail "inspect cannot read it"
echo OK
]=])
  add_test(NAME mkmodel_cli COMMAND bash ${_mk_cli} $<TARGET_FILE:tessera>)
  set_tests_properties(mkmodel_cli PROPERTIES LABELS "cli" TIMEOUT 300)
endif()
