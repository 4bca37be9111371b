"""Which device a step runs on: one rule for training, evaluation, encoding and serving."""

from __future__ import annotations

from modalrec.errors import ConfigError


def resolve_device(device: str | None = "auto", local_rank: int | None = None) -> str:
    """"auto" (or None / "") -> CUDA when available, else "cpu"; "cuda" -> CUDA, a ConfigError without it.
    Under a process group (`local_rank` given) "auto" / "cuda" mean this process's GPU, cuda:<local_rank>
    (one GPU per process). Anything else ("cpu", an explicit "cuda:K") is returned unchanged."""
    if device not in (None, "", "auto", "cuda"):
        return str(device)
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        return "cpu"
    if local_rank is None:
        return "cuda"
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                          "use --nproc_per_node <= number of GPUs")
    return f"cuda:{local_rank}"
