"""Settings that stored benchmark results were made with where a library default has changed since: a script
passes them explicitly, so rerunning it reproduces its stored results."""

from __future__ import annotations

from typing import Any

# Content towers (text / image / text+image) scaled every item vector to the fixed length 3 before they learned
# the length from 1.0 by default (models/towers/content.py, ITEM_LENGTH). Hybrids still default to it.
FIXED_ITEM_LENGTH: dict[str, Any] = {"scale": 3.0, "learn_scale": False}
