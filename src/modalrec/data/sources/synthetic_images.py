"""Small rendered item pictures for the built-in synthetic catalogue.

The picture follows the latent attributes: object colour = colour attribute (with jitter), object
shape = category, surface texture = material, background tint = style. Position, size, colours and
pixels are jittered so no two items of the same attributes look identical. Drawn with numpy only;
Pillow (imported lazily) encodes PNG.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modalrec.io import write_bytes_atomic

log = logging.getLogger(__name__)

# Indexed like ATTRIBUTE_VALUES["colour"] / ["style"] in synthetic_text.
COLOUR_RGB = np.array(
    [[200, 30, 30], [30, 60, 200], [40, 160, 50], [230, 205, 40],
     [25, 25, 25], [245, 245, 240], [130, 40, 170], [240, 130, 20]], dtype=np.float32,
)
STYLE_BACKGROUND_RGB = np.array(
    [[222, 205, 178], [178, 222, 235], [196, 196, 196], [176, 150, 112], [235, 188, 212]], dtype=np.float32,
)


def _shape_mask(category: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[S, S] bool silhouette of a category in object coordinates u (right) and v (down), about [-1, 1]."""
    au, av = np.abs(u), np.abs(v)
    r = np.sqrt(u**2 + v**2)
    if category == 0:  # backpack: rounded box with a top loop
        loop = (np.sqrt(u**2 + (v + 0.85) ** 2) <= 0.25) & (v < -0.8)
        return ((u / 0.65) ** 4 + (v / 0.85) ** 4 <= 1) | loop
    if category == 1:  # sneakers: low, wide, flat-bottomed dome
        return (u**2 + ((v - 0.35) / 0.6) ** 2 <= 0.95) & (v <= 0.5)
    if category == 2:  # jacket: body with an open zip line and long sloping sleeves
        body = (au <= 0.5) & (v >= -0.8) & (v <= 0.85) & ((au >= 0.07) | (v < -0.55))
        return body | ((au > 0.5) & (au <= 0.85) & (v >= -0.7 + 0.4 * (au - 0.5)) & (v <= 0.55))
    if category == 3:  # t-shirt: T shape
        return ((au <= 0.9) & (v >= -0.8) & (v <= -0.35)) | ((au <= 0.42) & (v >= -0.8) & (v <= 0.85))
    if category == 4:  # hat: dome and brim
        return ((r <= 0.62) & (v <= 0.05)) | ((au <= 0.95) & (v > 0.05) & (v <= 0.25))
    if category == 5:  # watch: ring face with a strap
        return ((r >= 0.42) & (r <= 0.72)) | ((au <= 0.22) & (av >= 0.68))
    if category == 6:  # mug: body and handle ring
        rh = np.sqrt((u - 0.5) ** 2 + v**2)
        return ((np.abs(u + 0.15) <= 0.5) & (av <= 0.65)) | ((rh >= 0.15) & (rh <= 0.32) & (u > 0.3))
    if category == 7:  # lamp: conical shade, stem and base
        shade = (v >= -0.85) & (v <= -0.05) & (au <= 0.25 + 0.5 * (v + 0.85) / 0.8)
        return shade | ((au <= 0.07) & (v > -0.05) & (v <= 0.7)) | ((au <= 0.45) & (v > 0.7) & (v <= 0.88))
    raise ValueError(f"unknown category {category}")


def _texture(material: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """[S, S] float pattern in about [-1, 1]: where the surface is modulated, and in which direction."""
    period = max(3, size // 8)
    i, j = np.mgrid[0:size, 0:size]
    i = i + int(rng.integers(period))  # random phase
    half = period / 2
    if material == 0:  # leather: grain
        return np.clip(rng.normal(0.0, 0.45, (size, size)), -1, 1)
    if material == 1:  # cotton: plain
        return np.zeros((size, size))
    if material == 2:  # wool: dots
        di, dj = (i % period) - half + 0.5, (j % period) - half + 0.5
        return -(di**2 + dj**2 <= (period / 3) ** 2).astype(float)
    if material == 3:  # denim: diagonal twill
        return -((i + j) % period < half).astype(float)
    if material == 4:  # metal: brushed horizontal bands
        return np.where(i % period < half, 0.8, -0.5)
    if material == 5:  # plastic: checks
        return -(((i // max(1, int(half))) + (j // max(1, int(half)))) % 2).astype(float)
    raise ValueError(f"unknown material {material}")


def render_image(attrs: Sequence[int] | np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 3] uint8 picture of an item; `attrs` = (category, colour, material, style, price_band)."""
    cat, col, mat, sty = (int(a) for a in list(attrs)[:4])
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(coords, coords, indexing="ij")  # [S, S] each
    cx, cy = rng.uniform(-0.12, 0.12, 2)
    scale = rng.uniform(0.72, 0.92)
    mask = _shape_mask(cat, (x - cx) / scale, (y - cy) / scale)  # [S, S]

    bg = STYLE_BACKGROUND_RGB[sty] + rng.normal(0.0, 10.0, 3)  # [3]
    fg = COLOUR_RGB[col] + rng.normal(0.0, 14.0, 3)  # [3]
    # Texture darkens bright objects and brightens dark ones, so it shows on every colour.
    direction = -1.0 if fg.mean() > 110 else 1.0
    tex = _texture(mat, size, rng)[..., None] * (45.0 * direction)  # [S, S, 1]
    img = np.where(mask[..., None], fg + tex, bg)  # [S, S, 3]
    img = img + rng.normal(0.0, 5.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_images(
    image_dir: str | Path, names: Sequence[str], attrs: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Render and write `names[k]` (relative path) for attribute rows `attrs[k]`.

    A file that already holds identical bytes is left untouched (so re-running the generator with the
    same seed is cheap and keeps mtimes). Returns (written, unchanged).
    """
    root = Path(image_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = unchanged = 0
    for name, row in zip(names, attrs):
        data = encode_png(render_image(row, size, rng))
        path = root / name
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                unchanged += 1
                continue
        except FileNotFoundError:
            pass
        write_bytes_atomic(path, data)
        written += 1
    log.info("synthetic images in %s: %d written, %d unchanged", root, written, unchanged)
    return written, unchanged
