"""Model-free image fallback: colour histograms and gradient / texture statistics (numpy only;
PIL only decodes and resizes). Useful when no pretrained image model is available, and as a sanity
baseline: features a trained model cannot beat this with are not worth their cost."""

from __future__ import annotations

from typing import Any

import numpy as np

from modalrec.features.encoders.image import ImageEncoder

RGB_BINS = 8
HUE_BINS = 12
SV_BINS = 4
GRAD_BINS = 8
ORIENT_BINS = 8
GRID = 2


def _hist(values: np.ndarray, bins: int, lo: float, hi: float, weights: np.ndarray | None = None) -> np.ndarray:
    h, _ = np.histogram(values, bins=bins, range=(lo, hi), weights=weights)
    total = h.sum()
    return (h / total if total > 0 else h).astype(np.float32)


class ColourTextureStats(ImageEncoder):
    """Fixed-size descriptor of an image:

    RGB histograms (3 x 8), saturation-weighted hue histogram (12) + saturation / value histograms
    (2 x 4), RGB mean / std (6), 2x2-grid mean colour (12), gradient-magnitude histogram (8),
    magnitude-weighted orientation histogram (8), mean gradient, edge density, and local-contrast
    mean / std (4). All in [0, 1]-ish ranges so no learned scaling is needed.
    """

    def __init__(self, size: int = 64):
        if size < 16:
            from modalrec.errors import ConfigError

            raise ConfigError(f"ColourTextureStats size must be >= 16, got {size}")
        self.size = int(size)
        self.name, self.revision, self.pooling = "colour-texture-stats", "1", "none"
        self.dim = 3 * RGB_BINS + HUE_BINS + 2 * SV_BINS + 6 + 3 * GRID * GRID + GRAD_BINS + ORIENT_BINS + 4

    def extra_info(self) -> dict[str, Any]:
        return {"size": self.size}

    def describe(self, img: Any) -> np.ndarray:
        from PIL import Image

        img = img.resize((self.size, self.size), Image.BILINEAR)
        rgb = np.asarray(img, dtype=np.float32) / 255.0  # [S, S, 3]
        hsv = np.asarray(img.convert("HSV"), dtype=np.float32) / 255.0  # [S, S, 3]
        parts: list[np.ndarray] = [_hist(rgb[..., c], RGB_BINS, 0.0, 1.0) for c in range(3)]
        parts.append(_hist(hsv[..., 0], HUE_BINS, 0.0, 1.0, weights=hsv[..., 1]))
        parts += [_hist(hsv[..., c], SV_BINS, 0.0, 1.0) for c in (1, 2)]
        parts.append(rgb.reshape(-1, 3).mean(0))
        parts.append(rgb.reshape(-1, 3).std(0))
        half = self.size // GRID
        parts += [rgb[i * half : (i + 1) * half, j * half : (j + 1) * half].reshape(-1, 3).mean(0)
                  for i in range(GRID) for j in range(GRID)]
        gray = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)  # [S, S]
        gy, gx = np.gradient(gray)
        mag = np.hypot(gx, gy)  # [S, S]; max possible ~0.71 for unit-range images
        parts.append(_hist(mag, GRAD_BINS, 0.0, 0.5))
        angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation in [0, pi)
        parts.append(_hist(angle, ORIENT_BINS, 0.0, float(np.pi), weights=mag))
        cells = self.size // 8
        local = gray[: cells * 8, : cells * 8].reshape(cells, 8, cells, 8).std(axis=(1, 3))  # [S/8, S/8] contrast
        extra = [mag.mean(), (mag > 0.1).mean(), local.mean(), local.std()]
        parts.append(np.asarray(extra, dtype=np.float32))
        return np.concatenate(parts).astype(np.float32)

    def _encode_images(self, images: list[Any]) -> np.ndarray:
        return np.stack([self.describe(im) for im in images])  # [k, dim]
