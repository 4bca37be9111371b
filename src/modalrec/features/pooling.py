"""Token pooling shared by the text encoders, the hidden-state cache and models that run an encoder
themselves (the fine-tuning baselines): one definition, so "the same pooling" is the same code."""

from __future__ import annotations

import torch

from modalrec.errors import ConfigError

POOLINGS = ("mean", "last", "cls")


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states [B, T, d] with attention mask [B, T] -> [B, d] float32.

    Works for left and right padding alike: "last" takes the highest position whose mask is 1,
    "cls" the lowest. Pad positions are zeroed with masked_fill (not multiplied), so NaN/inf in
    pad states of left-padded decoders cannot leak into the mean.
    """
    mask = mask.bool()  # [B, T]
    hidden = hidden.float().masked_fill(~mask[..., None], 0.0)  # [B, T, d]
    if pooling == "mean":
        counts = mask.sum(1, keepdim=True).clamp(min=1).float()  # [B, 1]
        return hidden.sum(1) / counts  # [B, d]
    positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
    if pooling == "last":
        idx = (positions * mask).argmax(1)  # [B] last non-pad position
    elif pooling == "cls":
        idx = mask.int().argmax(1)  # [B] first non-pad position (argmax returns the first maximum)
    else:
        raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # [B, d]
