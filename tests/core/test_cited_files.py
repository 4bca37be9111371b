"""Docstrings, comments and Markdown that cite a `*.py` file of this repository cite one that exists.

A citation with a directory (`models/graph/lightgcn.py`) must match the end of a tracked path; a bare file
name (`input.py`) must be the name of some tracked file. Files of other projects are listed in EXTERNAL.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.py)\b")
# RecBole's, cited where its behaviour is worked around; the IISAN papers' code, cited for their protocol
EXTERNAL = {"configurator.py", "data_utils/preprocess.py"}


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.split()


def prose(path: str, text: str) -> list[tuple[int, str]]:
    """(line, text) of a file's prose: every line of Markdown; comments and docstrings of Python."""
    if path.endswith(".md"):
        return list(enumerate(text.splitlines(), 1))
    out = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(text).readline)
           if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                out.append((node.body[0].lineno, doc))
    return out


def missing_citations(path: str, text: str, files: list[str]) -> list[str]:
    names = {Path(f).name for f in files}
    found = []
    for line, chunk in prose(path, text):
        for ref in CITATION.findall(chunk):
            ok = (any(f == ref or f.endswith("/" + ref) for f in files) if "/" in ref else ref in names)
            if not ok and ref not in EXTERNAL:
                found.append(f"{path}:{line}: {ref}")
    return found


def test_the_check_finds_a_citation_of_a_missing_file() -> None:
    files = ["src/modalrec/models/graph/lightgcn.py", "src/modalrec/models/recformer/input.py"]
    text = '"""Items as text (see input.py); graph layers in models/graph/lightgcn.py."""\n# old: recformer_train.py\n'
    assert missing_citations("m.py", text, files) == ["m.py:2: recformer_train.py"]
    assert missing_citations("m.py", 'x = "gone.py"  # code, not prose\n', files) == []


def test_cited_repository_files_exist() -> None:
    files = tracked_files()
    bad = [m for f in files if f.endswith((".py", ".md")) and (ROOT / f).is_file()
           for m in missing_citations(f, (ROOT / f).read_text(), files)]
    assert not bad, "cited files that do not exist:\n" + "\n".join(bad)
