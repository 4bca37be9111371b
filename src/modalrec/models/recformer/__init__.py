"""Recformer: items as key-value text, one transformer over the user's item-text sequence."""
