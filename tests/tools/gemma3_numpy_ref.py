#!/usr/bin/env python3
"""gemma3_numpy_ref.py: an independent float64 numpy forward pass of a Gemma 3 text model,
working ONLY from a llama.cpp-style GGUF file (no transformers, no torch), written from
shared/docs/gemma3-spec.md section 2. make_hf_fixtures.py uses it to prove that the GGUF
conversion (tensor names, ne order, +1 on norms, metadata) reproduces HF's Gemma3ForCausalLM.

Conventions (spec sections 2-3):
  * embedding row t of token_embd, times float32(sqrt(d));
  * RMSNorm y = x / sqrt(mean(x^2) + eps) * w_gguf   (the +1 is already baked into the GGUF);
  * layer i is global iff (i + 1) % 6 == 0 (rope base rope.freq_base, positions divided by
    rope.scaling.factor when rope.scaling.type == "linear"); otherwise local (base
    rope.freq_base_swa, default 10000, no scaling, sliding window: key k visible from query q
    iff k <= q and q - k < W);
  * QK-norm per head before RoPE; NeoX (half-split) RoPE over the whole head_dim;
  * attention scale = query_pre_attn_scalar^-0.5 (key gemma3.attention.query_pre_attn_scalar;
    fallback head_dim, or hidden/heads when block_count == 62, as llama.cpp);
  * GQA: query head h uses kv head h // (H / KV);
  * post-attention / post-FFN norms on the branch before the residual add; GeGLU with tanh gelu;
  * final norm, tied output (token_embd) unless output.weight exists; no softcaps.

Usage as a script: python3 gemma3_numpy_ref.py MODEL.gguf TOKEN_ID...   (prints greedy argmax
of the last position and the logits' first values).
"""
import sys

import numpy as np
import gguf


def _field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def load_gguf(path):
    r = gguf.GGUFReader(path)
    arch = _field(r, "general.architecture")
    assert arch == "gemma3", arch
    m = {
        "d": int(_field(r, "gemma3.embedding_length")),
        "L": int(_field(r, "gemma3.block_count")),
        "ff": int(_field(r, "gemma3.feed_forward_length")),
        "H": int(_field(r, "gemma3.attention.head_count")),
        "KV": int(_field(r, "gemma3.attention.head_count_kv")),
        "hd": int(_field(r, "gemma3.attention.key_length")),
        "eps": float(_field(r, "gemma3.attention.layer_norm_rms_epsilon")),
        "base": float(_field(r, "gemma3.rope.freq_base", 1e6)),
        "base_swa": float(_field(r, "gemma3.rope.freq_base_swa", 10000.0)),
        "W": int(_field(r, "gemma3.attention.sliding_window", 0)),
        "scaling_type": _field(r, "gemma3.rope.scaling.type", "none"),
        "scaling_factor": float(_field(r, "gemma3.rope.scaling.factor", 1.0)),
        "qpas": _field(r, "gemma3.attention.query_pre_attn_scalar"),
    }
    if m["qpas"] is None:
        m["qpas"] = (m["d"] / m["H"]) if m["L"] == 62 else m["hd"]
    t = {}
    for ten in r.tensors:
        ne = [int(x) for x in ten.shape]  # ne[0] first
        if ten.tensor_type == gguf.GGMLQuantizationType.F32:
            # raw bytes: ne[0] contiguous -> numpy shape reversed(ne)
            raw = np.frombuffer(np.asarray(ten.data).tobytes(), dtype="<f4").reshape(ne[::-1])
        else:  # quantized: dequantized by the gguf package (bit-exact with ggml)
            raw = gguf.quants.dequantize(np.asarray(ten.data), ten.tensor_type).reshape(ne[::-1])
        t[ten.name] = raw.astype(np.float64)
    m["t"] = t
    return m


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))


def rope(x, pos, base, scale):
    # x: (n, heads, hd); NeoX half split
    hd = x.shape[-1]
    half = hd // 2
    inv = base ** (-np.arange(0, half, dtype=np.float64) * 2.0 / hd)
    ang = (pos[:, None] / scale) * inv[None, :]            # (n, half)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def forward(m, ids):
    """Returns (logits (n, vocab), hidden (L+1, n, d)) with HF's hidden_states convention:
    entry 0 = scaled embedding, entries 1..L-1 = layer outputs, entry L = final-normed output."""
    t, d, L, H, KV, hd, eps = m["t"], m["d"], m["L"], m["H"], m["KV"], m["hd"], m["eps"]
    ids = np.asarray(ids)
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    E = t["token_embd.weight"]                              # (vocab, d)
    x = E[ids] * float(np.float32(np.sqrt(d)))
    hidden = [x.copy()]
    scale = float(m["qpas"]) ** -0.5
    G = H // KV
    qi, ki = np.arange(n)[:, None], np.arange(n)[None, :]
    causal = ki <= qi
    for i in range(L):
        b = "blk.%d." % i
        is_global = (i + 1) % 6 == 0
        if is_global:
            base = m["base"]
            rscale = m["scaling_factor"] if m["scaling_type"] == "linear" else 1.0
            mask = causal
        else:
            base, rscale = m["base_swa"], 1.0
            mask = causal & ((qi - ki) < m["W"]) if m["W"] > 0 else causal
        h = rmsnorm(x, t[b + "attn_norm.weight"], eps)
        q = (h @ t[b + "attn_q.weight"].T).reshape(n, H, hd)
        k = (h @ t[b + "attn_k.weight"].T).reshape(n, KV, hd)
        v = (h @ t[b + "attn_v.weight"].T).reshape(n, KV, hd)
        q = rmsnorm(q, t[b + "attn_q_norm.weight"], eps)
        k = rmsnorm(k, t[b + "attn_k_norm.weight"], eps)
        q = rope(q, pos, base, rscale) * scale
        k = rope(k, pos, base, rscale)
        out = np.empty((n, H, hd))
        for hh in range(H):
            j = hh // G
            s = q[:, hh, :] @ k[:, j, :].T                  # (n, n)
            s = np.where(mask, s, -np.inf)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            out[:, hh, :] = p @ v[:, j, :]
        o = out.reshape(n, H * hd) @ t[b + "attn_output.weight"].T
        x = x + rmsnorm(o, t[b + "post_attention_norm.weight"], eps)
        h = rmsnorm(x, t[b + "ffn_norm.weight"], eps)
        f = gelu_tanh(h @ t[b + "ffn_gate.weight"].T) * (h @ t[b + "ffn_up.weight"].T)
        f = f @ t[b + "ffn_down.weight"].T
        x = x + rmsnorm(f, t[b + "post_ffw_norm.weight"], eps)
        hidden.append(x.copy())
    xn = rmsnorm(x, t["output_norm.weight"], eps)
    hidden[-1] = xn
    out_w = t.get("output.weight", E)
    logits = xn @ out_w.T
    return logits, np.stack(hidden)


if __name__ == "__main__":
    mdl = load_gguf(sys.argv[1])
    lg, _ = forward(mdl, [int(a) for a in sys.argv[2:]])
    print("argmax(last) =", int(lg[-1].argmax()), "logits[-1][:8] =", lg[-1][:8])
