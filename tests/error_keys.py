"""The error keys the code base can raise, read from the source with `ast` (no import, no run)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from vit_core.errors import VitCoreError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "vit_core").rglob("*.py"), *(ROOT / "app").rglob("*.py"), ROOT / "app.py"])
ERROR_CLASSES = {"VitCoreError", *(cls.__name__ for cls in VitCoreError.__subclasses__())}
# helper -> the position of its `what` argument (vit_core.validate)
CHECKS = {"as_index": 1, "check_index": 2, "check_range": 3, "check_choice": 2}


@dataclass(frozen=True)
class Call:
    where: str  # "vit_core/maps.py:42"
    name: str  # VitCoreError, WeightsUnavailable or a check_* helper
    key: str | None  # the literal first argument of an error; None if it is not a literal string
    whats: tuple[object, ...]  # the `what` arguments written as literals (a variable is checked when it renders)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literals(*nodes: ast.expr) -> tuple[object, ...]:
    return tuple(node.value for node in nodes if isinstance(node, ast.Constant))


def calls() -> list[Call]:
    """Every construction of a `VitCoreError` (or subclass) and every call of a shared check."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            whats = _literals(*(k.value for k in node.keywords if k.arg == "what"))
            if name in ERROR_CLASSES:
                first = node.args[0] if node.args else None
                is_literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
                found.append(Call(where, name, first.value if is_literal else None, whats))
            elif name in CHECKS:
                position = CHECKS[name]
                if len(node.args) > position:
                    whats += _literals(node.args[position])
                found.append(Call(where, name, None, whats))
    return found


def raised_keys() -> set[str]:
    return {call.key for call in calls() if call.key is not None}
