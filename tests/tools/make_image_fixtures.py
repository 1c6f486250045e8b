#!/usr/bin/env python3
"""make_image_fixtures.py: small test images and Hugging Face's Gemma 3 preprocessing of them,
for tests/unit/test_image.c (shard/image.c).

Regenerate (from the repo root; no network, a second):
    PYTHONPATH=<dir with pillow 13.0.0> /opt/ref/bin/python tests/tools/make_image_fixtures.py
Needs torch + transformers (5.24.0) + pillow (scripts/requirements.txt pins pillow).

The processor is transformers' Gemma3ImageProcessorPil (the PIL backend of Gemma 3's image
processor; the torchvision backend is used instead when torchvision is installed, and
differs slightly: docs/vision.md) with the settings of google/gemma-3-4b-it's
preprocessor_config.json (bilinear resample, rescale 1/255, mean = std = 0.5, RGB
conversion on, no pan and scan) except the target size: 896 x 896 tensors are 9.6 MB each,
so the fixtures use several smaller square sizes, up- and downscaling (the code path is the
same for every size).

Writes tests/fixtures/image/:
  <name>.<ext>        the encoded image (deterministic content, PIL encoders)
  <name>_<S>.f32      float32 little-endian pixel_values (3, S, S)
  images.json         [{file, width, height, size, tensor}] and the package versions
Self-check: every tensor value is k/127.5 - 1 for an integer k in [0, 255] (the 8-bit resize
then rescale / normalize), i.e. the comparison in C can be exact up to float rounding.
"""
import io
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image
import transformers
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "image")
rng = np.random.default_rng(8)


def pattern(w, h, ch):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                     ((x + y) * 7) % 256, (x * y) % 256][:ch], axis=-1)
    noise = rng.integers(0, 40, size=(h, w, ch))
    return np.clip(base + noise - 20, 0, 255).astype(np.uint8)


def enc(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


cases = []  # (name, ext, bytes, [sizes])
cases.append(("rgb_37x23", "png", enc(Image.fromarray(pattern(37, 23, 3), "RGB"), "PNG"), [64, 112]))
cases.append(("gray_50x41", "png", enc(Image.fromarray(pattern(50, 41, 1)[..., 0], "L"), "PNG"), [64]))
cases.append(("rgba_33x47", "png", enc(Image.fromarray(pattern(33, 47, 4), "RGBA"), "PNG"), [64]))
pal = Image.fromarray(pattern(20, 30, 3), "RGB").quantize(colors=16)
cases.append(("palette_trns_20x30", "png", enc(pal, "PNG", transparency=3), [56]))
cases.append(("graya_26x19", "png", enc(Image.fromarray(pattern(26, 19, 2), "LA"), "PNG"), [56]))
cases.append(("photo_61x45", "jpg", enc(Image.fromarray(pattern(61, 45, 3), "RGB"), "JPEG", quality=90), [64, 224]))
cases.append(("gray_40x40", "jpg", enc(Image.fromarray(pattern(40, 40, 1)[..., 0], "L"), "JPEG", quality=85), [56]))
cases.append(("wide_300x170", "jpg", enc(Image.fromarray(pattern(300, 170, 3), "RGB"), "JPEG", quality=80, subsampling=2), [64, 112]))
cases.append(("lossy_45x31", "webp", enc(Image.fromarray(pattern(45, 31, 3), "RGB"), "WEBP", quality=80), [64]))
cases.append(("alpha_29x35", "webp", enc(Image.fromarray(pattern(29, 35, 4), "RGBA"), "WEBP", quality=80), [56]))
cases.append(("lossless_24x24", "webp", enc(Image.fromarray(pattern(24, 24, 3), "RGB"), "WEBP", lossless=True), [56]))

os.makedirs(OUT, exist_ok=True)
index = []
for name, ext, data, sizes in cases:
    fn = f"{name}.{ext}"
    with open(os.path.join(OUT, fn), "wb") as f:
        f.write(data)
    img = Image.open(io.BytesIO(data))
    img.load()
    for S in sizes:
        proc = Gemma3ImageProcessorPil(size={"height": S, "width": S}, resample=2,
                                       rescale_factor=1 / 255, image_mean=[0.5] * 3,
                                       image_std=[0.5] * 3, do_convert_rgb=True,
                                       do_pan_and_scan=False)
        pv = proc(images=[img], return_tensors="np")["pixel_values"]
        pv = np.asarray(pv, dtype=np.float32)
        assert pv.shape == (1, 3, S, S), pv.shape
        k = (pv[0].astype(np.float64) + 1.0) * 127.5
        assert np.abs(k - np.round(k)).max() < 1e-4 and k.min() > -1e-4 and k.max() < 255 + 1e-4
        tn = f"{name}_{S}.f32"
        pv[0].astype("<f4").tofile(os.path.join(OUT, tn))
        index.append({"file": fn, "width": img.size[0], "height": img.size[1], "size": S,
                      "tensor": tn})
with open(os.path.join(OUT, "images.json"), "w") as f:
    json.dump({"generator": {"transformers": transformers.__version__, "pillow": PIL.__version__,
                             "numpy": np.__version__, "processor": "Gemma3ImageProcessorPil"},
               "images": index}, f, indent=1)
print(f"wrote {len(index)} tensors for {len(cases)} images to {OUT}")
