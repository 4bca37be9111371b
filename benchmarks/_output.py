"""How every benchmark reports: the JSON on stdout, and the same JSON written atomically to --out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modalrec.io import write_json_atomic


def emit_json(result: dict[str, Any], out: str | Path | None) -> None:
    """Print `result` as indented JSON (values JSON cannot hold become strings) and write it to `out` if given."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        write_json_atomic(out, json.loads(text))
