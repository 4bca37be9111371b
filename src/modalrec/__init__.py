"""modalrec: multimodal sequential recommendation with real cold-start support."""

__version__ = "0.1.0"
