#!/usr/bin/env python3
"""lcdump.py: dump llama.cpp's intermediate tensors (llama-cpp-python cb_eval) and compare
them with tessera's (tests/tools/lc_logits.c, TS_DUMP=FILE).

  lcdump.py dump MODEL batch|seq|mixN OUT.npz [--match REGEX] TOK0 TOK1 ...
      Runs llama.cpp (CPU, F32 KV cache, no flash attention, 2 threads) on the tokens,
      either as one batch, one token per decode, or (mixN) the first N as one batch and
      then one token per decode (the acceptance test's prompt + greedy steps), and saves every F32 contiguous graph
      tensor whose name matches REGEX (default: all) as OUT.npz: name -> (rows, ne0), the
      rows of all decode steps concatenated (names like "ffn_out-3" = layer 3).
  lcdump.py cmp LC.npz OURS.bin [NAMEMAP]
      Relative max difference per position of tessera's hook records (OURS.bin, written by
      lc_logits with TS_DUMP) against LC.npz. NAMEMAP: comma list ours=theirs
      (default layer_out=l_out). Prints one line per layer: the per-row max |a-b|/max|a|.

ggml_tensor field offsets (type 0, ne 16, nb 48, data 248, name 256) are those of the ggml
built into llama-cpp-python 0.3.36; check them against ggml.h if you upgrade.
"""
import ctypes
import re
import struct
import sys

import numpy as np


def dump(model, mode, out, toks, match):
    import llama_cpp
    rx = re.compile(match)
    store = {}

    @llama_cpp.ggml_backend_sched_eval_callback
    def cb(t, ask, ud):
        name = ctypes.string_at(t + 256, 64).split(b'\0')[0].decode()
        if ask:
            return bool(rx.search(name))
        typ = ctypes.c_int32.from_address(t).value
        ne = [ctypes.c_int64.from_address(t + 16 + 8 * i).value for i in range(4)]
        nb = [ctypes.c_size_t.from_address(t + 48 + 8 * i).value for i in range(4)]
        data = ctypes.c_void_p.from_address(t + 248).value
        if typ == 0 and data and nb[0] == 4 and nb[1] == 4 * ne[0] and nb[2] == nb[1] * ne[1] \
                and nb[3] == nb[2] * ne[2]:
            n = ne[0] * ne[1] * ne[2] * ne[3]
            a = np.frombuffer((ctypes.c_float * n).from_address(data), dtype=np.float32)
            store.setdefault(name, []).append(a.copy().reshape(-1, ne[0]))
        return True

    llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_batch=512, n_threads=2,
                          logits_all=True, verbose=False, type_k=0, type_v=0,
                          flash_attn=False, seed=0)
    p = llm.context_params
    p.cb_eval = cb
    p.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(llm.model, p)

    def decode(ts, pos0):
        b = llama_cpp.llama_batch_init(len(ts), 0, 1)
        b.n_tokens = len(ts)
        for i, tk in enumerate(ts):
            b.token[i] = tk
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        r = llama_cpp.llama_decode(ctx, b)
        llama_cpp.llama_batch_free(b)
        assert r == 0, r

    if mode == 'batch':
        decode(toks, 0)
    elif mode.startswith('mix'):  # mixN: the first N tokens in one batch, then one by one
        n0 = int(mode[3:])
        decode(toks[:n0], 0)
        for i in range(n0, len(toks)):
            decode([toks[i]], i)
    else:
        for i, tk in enumerate(toks):
            decode([tk], i)
    # keep tensors whose row width is the same in every step (drops e.g. kq, whose width
    # grows with the position in seq mode)
    res = {k: np.concatenate(v, 0) for k, v in store.items()
           if len(set(x.shape[1] for x in v)) == 1}
    np.savez(out, **res)
    print(f'{len(res)} tensors -> {out}')


def read_ours(path):
    recs = {}
    with open(path, 'rb') as f:
        while True:
            h = f.read(52)
            if len(h) < 52:
                break
            name = h[:32].split(b'\0')[0].decode()
            layer, rows, cols = struct.unpack('<iqq', h[32:])
            a = np.frombuffer(f.read(4 * rows * cols), dtype=np.float32).reshape(rows, cols)
            recs.setdefault((name, layer), []).append(a)
    return {k: np.concatenate(v, 0) for k, v in recs.items()}


def cmp(lcfile, ours, namemap):
    lc = np.load(lcfile)
    recs = read_ours(ours)
    pairs = [x.split('=') for x in namemap.split(',')]
    for il in range(-1, 64):
        for mine, theirs in pairs:
            k = f'{theirs}-{il}' if il >= 0 else theirs
            if k not in lc or (mine, il) not in recs:
                continue
            a, b = lc[k], recs[(mine, il)]
            n = min(len(a), len(b))
            d = np.abs(a[:n] - b[:n]).max(axis=1) / np.maximum(np.abs(a[:n]).max(axis=1), 1e-30)
            print(f'{il:3d} {mine:12s}', ' '.join('0' if x == 0 else f'{x:.0e}' for x in d))


if __name__ == '__main__':
    if len(sys.argv) >= 5 and sys.argv[1] == 'dump':
        args = sys.argv[2:]
        match = ''
        if '--match' in args:
            i = args.index('--match')
            match = args[i + 1]
            del args[i:i + 2]
        dump(args[0], args[1], args[2], [int(t) for t in args[3:]], match)
    elif len(sys.argv) >= 4 and sys.argv[1] == 'cmp':
        cmp(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else 'layer_out=l_out')
    else:
        print(__doc__)
        sys.exit(2)
