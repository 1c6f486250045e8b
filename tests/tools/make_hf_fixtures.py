#!/usr/bin/env python3
"""make_hf_fixtures.py: reference fixtures from Hugging Face transformers' Gemma3ForCausalLM
(tiny random-weight models) for the tessera C CPU engine.

Regenerate (from the repo root; takes ~10 s on one CPU thread, no network, no GPU):
    /opt/ref/bin/python tests/tools/make_hf_fixtures.py [OUTDIR]      # default tests/fixtures/hf
Produced with: torch 2.15.0 (CPU, 1 thread), transformers 5.24.0, numpy 2.4.6, gguf 0.19.0
(the versions actually used are also written into every <config>.json under "generator").
Deterministic: fixed seeds, one torch thread, eager attention, float32 -> rerunning gives
identical files with the same package versions.

For every config in CONFIGS it writes
  <config>.gguf          the model as llama.cpp's converter would write it (all tensors F32,
                         norm weights stored as 1 + w, tied embedding, no output.weight),
                         plus gemma3.attention.query_pre_attn_scalar (f32), always.
  <config>.json          config summary, embed_scale, cases (token ids, greedy continuation).
  <config>_<case>.bin    float32 little-endian: logits (n_tok, vocab) then
                         hidden states (n_layers + 1, n_tok, hidden) = HF's hidden_states tuple
                         (entry 0 = scaled embedding, entry i = output of layer i-1 for
                         1 <= i <= L-1, entry L = FINAL NORM applied to the output of layer L-1).
See tests/fixtures/hf/README.md.

Self-checks run every time (the script exits non-zero if one fails):
  * the GGUF is read back with gguf.GGUFReader and every tensor is compared with the HF state
    dict (shape order, +1 on norms, tied embedding);
  * tests/tools/gemma3_numpy_ref.py (an independent float64 numpy forward working only from
    the GGUF file) must reproduce the HF logits and hidden states of every case within 1e-5
    (relative to the max abs value of the tensor);
  * logits are not flat (std >= 1) and greedy margins are not tiny (top1 - top2 >= MIN_MARGIN
    at every greedy step); prompts are re-drawn (next seed) until that holds.
"""
import json
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import gguf  # noqa: E402
import transformers  # noqa: E402
from transformers import Gemma3ForCausalLM, Gemma3TextConfig  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gemma3_numpy_ref as npref  # noqa: E402

OUTDIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "hf")

VOCAB = 512
N_GEN = 8
MIN_MARGIN = 0.05      # min top1-top2 logit gap at each greedy step
MIN_DISTINCT = 3       # greedy continuation must contain >= 3 distinct ids (not one repeated token)
NORM_STD = 0.3         # norm weights w ~ N(0, 0.3)  (GGUF stores 1 + w) ...
BRANCH_NORM_MEAN = 2.0 # ... except post_attention / post_feedforward / final norm: w ~ N(2, 0.3)
                       # (gain ~3, as trained Gemma models have large norm gains). Without it the
                       # sqrt(d)-scaled token embedding dominates the residual stream and, with the
                       # tied output head, greedy decoding just repeats the last token.
EMB_STD = 0.1
LIN_GAIN = 1.0         # linear weights ~ N(0, LIN_GAIN / sqrt(in_features))
NUMPY_TOL = 1e-5

LOCAL_ROPE = {"rope_type": "default", "rope_theta": 10000.0}
GLOBAL_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}
GLOBAL_ROPE_LINEAR8 = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}

# name -> (seed, Gemma3TextConfig kwargs). qpas = query_pre_attn_scalar.
CONFIGS = [
    ("gqa1", 101, dict(hidden_size=64, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=4, head_dim=32,
                       query_pre_attn_scalar=32, sliding_window=6,
                       rope_parameters={"sliding_attention": LOCAL_ROPE, "full_attention": GLOBAL_ROPE})),
    ("gqa2", 202, dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                       query_pre_attn_scalar=32, sliding_window=8,
                       rope_parameters={"sliding_attention": LOCAL_ROPE, "full_attention": GLOBAL_ROPE})),
    # like 270M / 1B: 4 heads / 1 KV head, qpas == head_dim != hidden/heads, no rope scaling
    ("gqa4_270m_like", 303, dict(hidden_size=96, intermediate_size=32, num_hidden_layers=6,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                                 query_pre_attn_scalar=64, sliding_window=5,
                                 rope_parameters={"sliding_attention": LOCAL_ROPE,
                                                  "full_attention": GLOBAL_ROPE})),
    # like 27B: qpas = hidden/heads = 24 != head_dim 16; linear x8 rope scaling on global layers
    # only (4B/12B/27B); 8 layers: local 0-4, global 5, local 6-7.
    ("like27b", 404, dict(hidden_size=96, intermediate_size=64, num_hidden_layers=8,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                          query_pre_attn_scalar=24, sliding_window=8,
                          rope_parameters={"sliding_attention": LOCAL_ROPE,
                                           "full_attention": GLOBAL_ROPE_LINEAR8})),
    # for 4-way tensor parallelism (tests/mpi: tp 4, pp 4): 8 heads / 4 KV heads, FFN of 4
    # blocks of 32; 6 layers: local 0-4, global 5
    ("tp4like", 505, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                          num_attention_heads=8, num_key_value_heads=4, head_dim=16,
                          query_pre_attn_scalar=16, sliding_window=6,
                          rope_parameters={"sliding_attention": LOCAL_ROPE,
                                           "full_attention": GLOBAL_ROPE_LINEAR8})),
]


def make_model(name, seed, kw):
    cfg = Gemma3TextConfig(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-6,
                           attn_implementation="eager", dtype=torch.float32,
                           pad_token_id=0, eos_token_id=1, bos_token_id=2,
                           tie_word_embeddings=True, **kw)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg).eval().to(torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):  # lm_head is tied -> not listed
            if pname.endswith("norm.weight"):
                mean = BRANCH_NORM_MEAN if pname.endswith(
                    ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight",
                     "model.norm.weight")) else 0.0
                p.copy_(torch.randn(p.shape, generator=g) * NORM_STD + mean)
            elif pname == "model.embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=g) * EMB_STD)
            else:
                assert p.dim() == 2, pname
                p.copy_(torch.randn(p.shape, generator=g) * (LIN_GAIN / p.shape[1] ** 0.5))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    return cfg, model


def hf_forward(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    logits = out.logits[0].numpy().astype(np.float32)
    hidden = np.stack([h[0].numpy() for h in out.hidden_states]).astype(np.float32)
    return logits, hidden


def greedy(model, ids, n):
    """Manual greedy loop, full recomputation each step (no KV cache): exact."""
    seq = list(ids)
    gen, margins = [], []
    for _ in range(n):
        with torch.no_grad():
            lg = model(torch.tensor([seq]), use_cache=False).logits[0, -1].numpy()
        order = np.argsort(-lg, kind="stable")
        gen.append(int(order[0]))
        margins.append(float(lg[order[0]] - lg[order[1]]))
        seq.append(int(order[0]))
    return gen, margins


def write_gguf(path, cfg, model):
    L = cfg.num_hidden_layers
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_name("tessera-hf-fixture")
    w.add_file_type(0)  # ALL_F32
    w.add_quantization_version(2)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(L)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    glob = cfg.rope_parameters["full_attention"]
    loc = cfg.rope_parameters["sliding_attention"]
    assert loc["rope_type"] == "default"
    w.add_rope_freq_base(glob["rope_theta"])
    w.add_rope_freq_base_swa(loc["rope_theta"])
    w.add_sliding_window(cfg.sliding_window)
    if glob["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(glob["factor"])
    else:
        assert glob["rope_type"] == "default"
    w.add_float32("gemma3.attention.query_pre_attn_scalar", float(cfg.query_pre_attn_scalar))
    # minimal tokenizer
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"] + ["t%d" % i for i in range(4, cfg.vocab_size)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores([-1000.0] * 4 + [-float(i) for i in range(4, cfg.vocab_size)])
    w.add_token_types([3, 3, 3, 2] + [1] * (cfg.vocab_size - 4))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    def norm(x):  # llama.cpp converter: +1 on every *norm.weight
        return (x + np.float32(1.0)).astype(np.float32)

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(L):
        p = "model.layers.%d." % i
        b = "blk.%d." % i
        w.add_tensor(b + "attn_norm.weight", norm(sd[p + "input_layernorm.weight"]))
        w.add_tensor(b + "attn_q.weight", sd[p + "self_attn.q_proj.weight"])
        w.add_tensor(b + "attn_k.weight", sd[p + "self_attn.k_proj.weight"])
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_q_norm.weight", norm(sd[p + "self_attn.q_norm.weight"]))
        w.add_tensor(b + "attn_k_norm.weight", norm(sd[p + "self_attn.k_norm.weight"]))
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "post_attention_norm.weight", norm(sd[p + "post_attention_layernorm.weight"]))
        w.add_tensor(b + "ffn_norm.weight", norm(sd[p + "pre_feedforward_layernorm.weight"]))
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
        w.add_tensor(b + "post_ffw_norm.weight", norm(sd[p + "post_feedforward_layernorm.weight"]))
    w.add_tensor("output_norm.weight", norm(sd["model.norm.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sd


HF_OF_GGUF = {
    "attn_norm": ("input_layernorm.weight", True), "attn_q": ("self_attn.q_proj.weight", False),
    "attn_k": ("self_attn.k_proj.weight", False), "attn_v": ("self_attn.v_proj.weight", False),
    "attn_q_norm": ("self_attn.q_norm.weight", True), "attn_k_norm": ("self_attn.k_norm.weight", True),
    "attn_output": ("self_attn.o_proj.weight", False),
    "post_attention_norm": ("post_attention_layernorm.weight", True),
    "ffn_norm": ("pre_feedforward_layernorm.weight", True), "ffn_gate": ("mlp.gate_proj.weight", False),
    "ffn_up": ("mlp.up_proj.weight", False), "ffn_down": ("mlp.down_proj.weight", False),
    "post_ffw_norm": ("post_feedforward_layernorm.weight", True),
}


def check_gguf(path, cfg, sd):
    r = gguf.GGUFReader(path)
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names
    assert len(names) == 2 + 13 * cfg.num_hidden_layers, len(names)
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        arr = np.asarray(t.data)
        ne = [int(x) for x in t.shape]  # GGUF ne order (ne[0] first)
        if t.name == "token_embd.weight":
            ref, plus1 = sd["model.embed_tokens.weight"], False
        elif t.name == "output_norm.weight":
            ref, plus1 = sd["model.norm.weight"], True
        else:
            _, i, kind, _ = t.name.split(".")
            hf, plus1 = HF_OF_GGUF[kind]
            ref = sd["model.layers.%s.%s" % (i, hf)]
        assert ne == list(ref.shape[::-1]), (t.name, ne, ref.shape)
        assert arr.shape == ref.shape, (t.name, arr.shape, ref.shape)   # reader gives torch order
        exp = ref + np.float32(1.0) if plus1 else ref
        assert np.array_equal(arr, exp), t.name
    # spot check: torch (out,in) row r == GGUF row r (ne[0] = in contiguous)
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    raw = np.frombuffer(bytes(np.asarray(t.data).tobytes()), dtype="<f4")
    q = sd["model.layers.0.self_attn.q_proj.weight"]
    assert np.array_equal(raw[: q.shape[1]], q[0]), "row 0 of attn_q is not q_proj[0, :]"
    kv = {f.name: f for f in r.fields.values()}
    assert "gemma3.attention.query_pre_attn_scalar" in kv


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) / np.max(np.abs(b)))


def draw_prompt(rng, n):
    return [2] + [int(x) for x in rng.integers(4, VOCAB, size=n - 1)]


def main():
    os.makedirs(OUTDIR, exist_ok=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "numpy": np.__version__, "gguf": "0.19.0"}
    try:
        from importlib.metadata import version
        versions["gguf"] = version("gguf")
    except Exception:
        pass
    worst_np = 0.0
    for name, seed, kw in CONFIGS:
        cfg, model = make_model(name, seed, kw)
        W = cfg.sliding_window
        gpath = os.path.join(OUTDIR, name + ".gguf")
        sd = write_gguf(gpath, cfg, model)
        check_gguf(gpath, cfg, sd)
        npmodel = npref.load_gguf(gpath)

        emb_scale = model.model.embed_tokens.embed_scale.to(torch.float32).item()
        case_specs = [("short", 5), ("long", 3 * W), ("batch0", 3), ("batch1", W + 1), ("batch2", 2 * W + 3)]
        rng = np.random.default_rng(seed)
        cases = []
        for cname, n in case_specs:
            for attempt in range(100):
                ids = draw_prompt(rng, n)
                gen, margins = greedy(model, ids, N_GEN)
                logits, hidden = hf_forward(model, ids)
                if (min(margins) >= MIN_MARGIN and float(logits.std()) >= 1.0
                        and all(t >= 4 for t in gen) and len(set(gen)) >= MIN_DISTINCT):
                    break
            else:
                raise SystemExit("%s/%s: could not find a prompt with clear greedy margins" % (name, cname))
            assert hidden.shape == (cfg.num_hidden_layers + 1, n, cfg.hidden_size)
            # full-sequence forward of prompt+continuation must reproduce the greedy choice
            full_logits, _ = hf_forward(model, ids + gen)
            assert [int(x) for x in full_logits[n - 1:-1].argmax(-1)] == gen
            # independent numpy reference from the GGUF
            np_logits, np_hidden = npref.forward(npmodel, ids)
            e_l = rel_err(np_logits, logits)
            e_h = max(rel_err(np_hidden[i], hidden[i]) for i in range(hidden.shape[0]))
            worst_np = max(worst_np, e_l, e_h)
            assert e_l <= NUMPY_TOL and e_h <= NUMPY_TOL, (name, cname, e_l, e_h)
            fn = "%s_%s.bin" % (name, cname)
            with open(os.path.join(OUTDIR, fn), "wb") as f:
                f.write(logits.astype("<f4").tobytes())
                f.write(hidden.astype("<f4").tobytes())
            cases.append({"name": cname, "file": fn, "n_tok": n, "tokens": ids, "greedy": gen,
                          "greedy_margins": [round(m, 4) for m in margins],
                          "logits_std": round(float(logits.std()), 4),
                          "prompt_attempts": attempt + 1,
                          "numpy_ref_rel_err": {"logits": e_l, "hidden": e_h}})
            print("%-16s %-7s n=%-3d logits std %.2f  min greedy margin %.3f  numpy rel err %.2e / %.2e  gen %s"
                  % (name, cname, n, logits.std(), min(margins), e_l, e_h, gen))
        L = cfg.num_hidden_layers
        meta = {
            "name": name, "seed": seed, "gguf": name + ".gguf",
            "generator": {"script": "tests/tools/make_hf_fixtures.py", "hf_class": "Gemma3ForCausalLM",
                          "attn_implementation": "eager", "dtype": "float32", "versions": versions},
            "config": {"vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
                       "intermediate_size": cfg.intermediate_size, "num_hidden_layers": L,
                       "num_attention_heads": cfg.num_attention_heads,
                       "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
                       "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
                       "attn_scale": float(cfg.query_pre_attn_scalar) ** -0.5,
                       "sliding_window": W, "rms_norm_eps": cfg.rms_norm_eps,
                       "max_position_embeddings": cfg.max_position_embeddings,
                       "layer_types": list(cfg.layer_types),
                       "rope_parameters": cfg.rope_parameters,
                       "tie_word_embeddings": True},
            "embed_scale": emb_scale, "embed_scale_expr": "float32(sqrt(hidden_size))",
            "bin_layout": {"dtype": "float32 little-endian",
                           "logits": ["n_tok", "vocab_size"],
                           "hidden": ["num_hidden_layers + 1", "n_tok", "hidden_size"],
                           "hidden_index": "0 = embedding*embed_scale; i (1..L-1) = output of layer i-1; "
                                           "L = output_norm(output of layer L-1)"},
            "n_gen": N_GEN, "cases": cases,
        }
        with open(os.path.join(OUTDIR, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
    print("worst numpy-vs-HF relative error: %.3e" % worst_np)
    total = sum(os.path.getsize(os.path.join(OUTDIR, f)) for f in os.listdir(OUTDIR))
    print("total fixture size: %d bytes" % total)


if __name__ == "__main__":
    main()
