"""One place runs a training epoch: only the Trainer (training/loop.py) builds optimizers and steps them,
only its step strategies (loop.py, distributed.py) run a loss backward, and nothing patches methods."""

from __future__ import annotations

import ast
from pathlib import Path

import modalrec

ROOT = Path(modalrec.__file__).resolve().parent
STRATEGIES = {"training/loop.py", "training/distributed.py"}


def _calls(tree: ast.AST, attr: str) -> int:
    return sum(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr
               for n in ast.walk(tree))


def _modules() -> dict[str, ast.AST]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in ROOT.rglob("*.py")}


def test_only_the_trainer_builds_and_steps_optimizers() -> None:
    optimizers = ("Adam", "AdamW", "SGD", "LambdaLR", "clip_grad_norm_")
    found = {name: [a for a in optimizers if _calls(tree, a)] for name, tree in _modules().items()}
    assert {name for name, hits in found.items() if hits} == {"training/loop.py"}, found


def test_only_step_strategies_run_a_loss_backward() -> None:
    assert {name for name, tree in _modules().items() if _calls(tree, "backward")} == STRATEGIES


def _is_function(value: ast.AST) -> bool:
    """A lambda or a functools.partial(...): what a patched-on method is built from."""
    return isinstance(value, ast.Lambda) or (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                                             and value.func.attr == "partial")


def test_no_method_is_patched_onto_another_object() -> None:
    patched = [f"{name}:{node.lineno}" for name, tree in _modules().items() for node in ast.walk(tree)
               if isinstance(node, ast.Assign) and _is_function(node.value)
               and any(isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name) and t.value.id == "self")
                       for t in node.targets)]
    assert not patched, patched
