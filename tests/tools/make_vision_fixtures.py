#!/usr/bin/env python3
"""make_vision_fixtures.py: a tiny random-weight Hugging Face Gemma3ForConditionalGeneration
(SigLIP vision tower + multimodal projector + Gemma 3 text model) and its outputs, for the
tessera vision encoder (shard/vision.c, tests/unit/test_vision.c) and multimodal prompts.

Regenerate (from the repo root; a few seconds on one CPU thread, no network):
    /opt/ref/bin/python tests/tools/make_vision_fixtures.py [OUTDIR]   # tests/fixtures/vision
Deterministic (seeds, one thread, eager attention, float32).

Inputs: two preprocessed images from tests/fixtures/image (HF Gemma3ImageProcessorPil at
112 x 112: rgb_37x23_112.f32, wide_300x170_112.f32).
Tiny config: image 112, patch 14 (8 x 8 = 64 patches), width 32, 4 heads, MLP 48, 2 layers,
eps 1e-6; mm_tokens_per_image 4 (4 x 4 average pooling, as the real 64 x 64 -> 16 x 16);
text: 6 layers (5 sliding + 1 global), width 64, 4 heads / 2 KV heads, head_dim 16,
sliding window 4 (smaller than an image block plus its prefix: exercises the mask), vocab 512
with <start_of_image> = 500, <end_of_image> = 501, image soft token = 502.

Writes OUTDIR/:
  tiny/config.json, tiny/model.safetensors   HF save_pretrained of the whole model
  tiny_mmproj.gguf       the vision tower + projector as a llama.cpp mmproj GGUF (clip.*,
                         v.*, mm.*; gguf package constants), all F32
  tiny_mmproj_f16.gguf   the same with F16 matrices and the projection in F16 (llama.cpp
                         forces F16 there), legacy fc1/fc2 name swap (ffn_down holds fc1)
  tiny_text.gguf         the text model as llama.cpp's converter writes it (make_hf_fixtures)
  img<i>_vision.f32      vision_tower last_hidden_state (64, 32) for image i
  img<i>_embd.f32        get_image_features (projector output) (4, 64)
  mm_logits.f32          logits (n_tok, 512) of the multimodal prompt in vision.json
  tiny_sg/               the same weights as a ShieldGemma2ForImageClassification checkpoint
                         (yes/no token indices 20 / 30), its P(Yes) for both images on a
                         prompt of random ids around the image block in vision.json
  vision.json            config, prompt ids, files, package versions
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
from transformers import (Gemma3Config, Gemma3ForConditionalGeneration,  # noqa: E402
                          SiglipVisionConfig)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_hf_fixtures as hff  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "vision")
IMG = os.path.join(HERE, "..", "fixtures", "image")
BOI, EOI, IMGTOK = 500, 501, 502
MM_TOKENS = 4
SG_YES, SG_NO = 20, 30   # ShieldGemma 2 answer ids in the tiny vocabulary


def main():
    os.makedirs(OUT, exist_ok=True)
    text_kw = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   query_pre_attn_scalar=16, sliding_window=4,
                   rope_parameters={"sliding_attention": hff.LOCAL_ROPE,
                                    "full_attention": hff.GLOBAL_ROPE})
    tcfg, text = hff.make_model("mm", 808, text_kw)
    # context 2048 (no effect on the weights or default RoPE): room for the ShieldGemma
    # prompt, which the tiny vocabulary spells nearly byte by byte (tessera safety test)
    tcfg.max_position_embeddings = 2048
    text.config.max_position_embeddings = 2048
    vcfg = SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, image_size=112, patch_size=14,
                              layer_norm_eps=1e-6, vision_use_head=False,
                              hidden_act="gelu_pytorch_tanh")
    cfg = Gemma3Config(text_config=tcfg.to_dict(), vision_config=vcfg.to_dict(),
                       mm_tokens_per_image=MM_TOKENS, boi_token_index=BOI, eoi_token_index=EOI,
                       image_token_index=IMGTOK, attn_implementation="eager",
                       tie_word_embeddings=True)
    torch.manual_seed(809)
    model = Gemma3ForConditionalGeneration(cfg).eval().to(torch.float32)
    g = torch.Generator().manual_seed(810)
    tsd = text.state_dict()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".language_model." in name:
                src = "model." + name.split(".language_model.", 1)[1]
                p.copy_(tsd[src])
            elif name.endswith("mm_input_projection_weight"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
            elif name.endswith("mm_soft_emb_norm.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "layer_norm" in name or "post_layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("position_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    # the text part must equal the standalone text model (for its GGUF)
    for k, v in tsd.items():
        if k == "lm_head.weight":
            continue
        assert np.array_equal(sd["model.language_model." + k[len("model."):]], v.numpy()), k

    model.save_pretrained(os.path.join(OUT, "tiny"), safe_serialization=True)
    hff.write_gguf(os.path.join(OUT, "tiny_text.gguf"), tcfg, text)

    # ---- outputs per image ----
    files = {}
    feats = []
    for i, name in enumerate(["rgb_37x23_112.f32", "wide_300x170_112.f32"]):
        px = np.fromfile(os.path.join(IMG, name), dtype="<f4").reshape(1, 3, 112, 112)
        with torch.no_grad():
            vt = model.model.vision_tower(pixel_values=torch.from_numpy(px)).last_hidden_state
            emb = model.model.get_image_features(pixel_values=torch.from_numpy(px))
            emb = getattr(emb, "pooler_output", emb)
        vt = vt[0].numpy().astype(np.float32)
        emb = emb.reshape(-1, emb.shape[-1]).numpy().astype(np.float32)
        assert vt.shape == (64, 32) and emb.shape == (MM_TOKENS, 64), (vt.shape, emb.shape)
        assert vt.std() > 0.3 and emb.std() > 0.3, (vt.std(), emb.std())
        vt.tofile(os.path.join(OUT, f"img{i}_vision.f32"))
        emb.tofile(os.path.join(OUT, f"img{i}_embd.f32"))
        files[f"img{i}"] = {"pixels": "../image/" + name, "vision": f"img{i}_vision.f32",
                            "embd": f"img{i}_embd.f32"}
        feats.append(px)

    # ---- mmproj GGUFs ----
    def write_mmproj(path, f16, legacy_swap):
        w = gguf.GGUFWriter(path, "clip")
        w.add_type("mmproj")
        w.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
        w.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "gemma3")
        K = gguf.Keys.ClipVision
        w.add_uint32(K.IMAGE_SIZE, 112)
        w.add_uint32(K.PATCH_SIZE, 14)
        w.add_uint32(K.EMBEDDING_LENGTH, 32)
        w.add_uint32(K.FEED_FORWARD_LENGTH, 48)
        w.add_uint32(K.BLOCK_COUNT, 2)
        w.add_uint32(K.PROJECTION_DIM, 64)
        w.add_uint32(K.Attention.HEAD_COUNT, 4)
        w.add_float32(K.Attention.LAYERNORM_EPS, 1e-6)
        w.add_array(K.IMAGE_MEAN, [0.5, 0.5, 0.5])
        w.add_array(K.IMAGE_STD, [0.5, 0.5, 0.5])
        w.add_bool(gguf.Keys.ClipVision.USE_GELU, True)
        w.add_uint32(K.Projector.SCALE_FACTOR, 4)
        v = next(k for k in sd if k.endswith("embeddings.patch_embedding.weight"))
        v = v[:-len("embeddings.patch_embedding.weight")]
        mat = (lambda x: x.astype(np.float16)) if f16 else (lambda x: x)
        w.add_tensor("v.patch_embd.weight", sd[v + "embeddings.patch_embedding.weight"])
        w.add_tensor("v.patch_embd.bias", sd[v + "embeddings.patch_embedding.bias"])
        w.add_tensor("v.position_embd.weight", sd[v + "embeddings.position_embedding.weight"])
        for l in range(2):
            p, b = f"{v}encoder.layers.{l}.", f"v.blk.{l}."
            w.add_tensor(b + "ln1.weight", sd[p + "layer_norm1.weight"])
            w.add_tensor(b + "ln1.bias", sd[p + "layer_norm1.bias"])
            for hf, lc in [("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                           ("out_proj", "attn_out")]:
                w.add_tensor(b + lc + ".weight", mat(sd[p + f"self_attn.{hf}.weight"]))
                w.add_tensor(b + lc + ".bias", sd[p + f"self_attn.{hf}.bias"])
            w.add_tensor(b + "ln2.weight", sd[p + "layer_norm2.weight"])
            w.add_tensor(b + "ln2.bias", sd[p + "layer_norm2.bias"])
            up, down = ("ffn_down", "ffn_up") if legacy_swap else ("ffn_up", "ffn_down")
            w.add_tensor(b + up + ".weight", mat(sd[p + "mlp.fc1.weight"]))
            w.add_tensor(b + up + ".bias", sd[p + "mlp.fc1.bias"])
            w.add_tensor(b + down + ".weight", mat(sd[p + "mlp.fc2.weight"]))
            w.add_tensor(b + down + ".bias", sd[p + "mlp.fc2.bias"])
        w.add_tensor("v.post_ln.weight", sd[v + "post_layernorm.weight"])
        w.add_tensor("v.post_ln.bias", sd[v + "post_layernorm.bias"])
        pj = next(k for k in sd if k.endswith("mm_input_projection_weight"))
        pj = pj[:-len("mm_input_projection_weight")]
        w.add_tensor("mm.input_projection.weight",
                     sd[pj + "mm_input_projection_weight"].astype(np.float16 if f16 else np.float32))
        w.add_tensor("mm.soft_emb_norm.weight", sd[pj + "mm_soft_emb_norm.weight"] + np.float32(1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    write_mmproj(os.path.join(OUT, "tiny_mmproj.gguf"), False, False)
    write_mmproj(os.path.join(OUT, "tiny_mmproj_f16.gguf"), True, True)
    r = gguf.GGUFReader(os.path.join(OUT, "tiny_mmproj.gguf"))
    t = {x.name: x for x in r.tensors}
    assert list(t["v.patch_embd.weight"].shape) == [14, 14, 3, 32]
    assert list(t["mm.input_projection.weight"].shape) == [64, 32]
    assert list(t["v.blk.0.ffn_up.weight"].shape) == [32, 48]

    # ---- a multimodal prompt: two images, text around them ----
    img = [BOI] + [IMGTOK] * MM_TOKENS + [EOI]
    ids = [2, 10, 11, 12] + img + [13, 14] + img + [15, 16, 17]
    tt = [1 if x == IMGTOK else 0 for x in ids]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([tt]),
                    pixel_values=torch.from_numpy(np.concatenate(feats)), use_cache=False)
    logits = out.logits[0].numpy().astype(np.float32)
    assert logits.std() > 0.5
    logits.tofile(os.path.join(OUT, "mm_logits.f32"))
    # the bidirectional image mask matters: the same prompt with a causal mask differs
    with torch.no_grad():
        causal = model(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(
            np.concatenate(feats)), use_cache=False).logits[0].numpy()
    diff = float(np.abs(causal - logits).max())
    assert diff > 1e-2, diff

    # ---- ShieldGemma 2 on the same weights: P(Yes) at the last position ----
    from transformers import ShieldGemma2Config, ShieldGemma2ForImageClassification
    scfg = ShieldGemma2Config(text_config=tcfg.to_dict(), vision_config=vcfg.to_dict(),
                              mm_tokens_per_image=MM_TOKENS, boi_token_index=BOI,
                              eoi_token_index=EOI, image_token_index=IMGTOK)
    scfg.yes_token_index, scfg.no_token_index = SG_YES, SG_NO
    scfg.text_config._attn_implementation = "eager"
    scfg.vision_config._attn_implementation = "eager"
    sg = ShieldGemma2ForImageClassification(scfg).eval().to(torch.float32)
    missing = sg.model.load_state_dict(model.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys
    sg.save_pretrained(os.path.join(OUT, "tiny_sg"), safe_serialization=True)
    rs = np.random.default_rng(811)
    sg_ids = ([2, 2] + rs.integers(4, 500, 9).tolist() + img +
              rs.integers(4, 500, 14).tolist())
    sg_tt = [1 if x == IMGTOK else 0 for x in sg_ids]
    sg_cases = []
    for i in range(2):
        with torch.no_grad():
            o = sg(input_ids=torch.tensor([sg_ids]), token_type_ids=torch.tensor([sg_tt]),
                   pixel_values=torch.from_numpy(feats[i]), use_cache=False)
        py = float(o.probabilities[0, 0])
        assert 0.02 < py < 0.98, py  # not saturated: a meaningful comparison
        sg_cases.append({"image": i, "p_yes": py, "logit_yes": float(o.logits[0, 0]),
                         "logit_no": float(o.logits[0, 1])})

    meta = {"generator": {"transformers": transformers.__version__, "torch": torch.__version__,
                          "gguf": getattr(gguf, "__version__", "?"), "numpy": np.__version__},
            "vision": {"image_size": 112, "patch_size": 14, "hidden": 32, "ff": 48, "layers": 2,
                       "heads": 4, "eps": 1e-6, "mm_tokens": MM_TOKENS, "text_hidden": 64},
            "tokens": {"boi": BOI, "eoi": EOI, "image": IMGTOK},
            "images": files, "prompt": ids, "logits": "mm_logits.f32", "vocab": 512,
            "causal_vs_bidirectional_max_diff": diff,
            "shieldgemma": {"yes": SG_YES, "no": SG_NO, "prompt": sg_ids,
                            "image_first": sg_ids.index(IMGTOK), "cases": sg_cases,
                            "checkpoint": "tiny_sg"}}
    with open(os.path.join(OUT, "vision.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("ok", OUT, "causal/bidirectional logit diff", diff)


if __name__ == "__main__":
    main()
