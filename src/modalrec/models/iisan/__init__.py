"""IISAN / IISAN-Versa side adapters over cached hidden states, and the FFT / LoRA / frozen baselines."""
