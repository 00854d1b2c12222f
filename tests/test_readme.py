"""The README's Python examples run as written, and the public names they use import.

Every fenced ```python block of README.md is executed in a fresh namespace, in a temporary
working directory (the examples are self-contained: they make their own data). The import
test covers every name the examples take from ``convexrecon`` and every name in
``convexrecon.__all__``.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

import convexrecon
from convexrecon.errors import ConvergenceWarning

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = python_blocks()[index]
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # the examples' solves reach their tolerance
        exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": f"readme_{index}"})


def names_used_by_examples() -> set[str]:
    """Names the examples import from ``convexrecon`` or reach as ``cr.X`` / ``convexrecon.X``."""
    names: set[str] = set()
    for code in python_blocks():
        tree = ast.parse(code)
        aliases = {"convexrecon"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name == "convexrecon"}
            elif isinstance(node, ast.ImportFrom) and node.module == "convexrecon":
                names |= {a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                names.add(node.attr)
    return names


def test_examples_use_public_names():
    used = names_used_by_examples()
    assert {"fit_layer", "global_check", "FitOptions", "train_layerwise", "load_network",
            "reconstruct_slice"} <= used
    assert used <= set(convexrecon.__all__), sorted(used - set(convexrecon.__all__))


@pytest.mark.parametrize("name", sorted(set(convexrecon.__all__) | names_used_by_examples()))
def test_top_level_import(name):
    namespace: dict = {}
    exec(f"from convexrecon import {name}", namespace)
    assert namespace[name] is getattr(convexrecon, name)
