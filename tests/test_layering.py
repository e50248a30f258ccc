"""Imports run one way: library packages downward only, ``app`` on top, ``experiments`` apart.

Every ``import`` / ``from ... import`` in every module (at any depth, so a deferred import
inside a function counts too) is read with ``ast`` and checked against :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import torchrec_recsys

PACKAGE = "torchrec_recsys"
LAYERS: dict[str, int] = {
    # library, lowest first; a package imports only packages of a lower layer
    "errors": 0,
    "config": 1,
    "files": 0,
    "observability": 1,
    "data": 2,
    "semantic_ids": 2,
    "distributed": 2,
    "models": 3,
    "metrics": 3,
    "training": 4,
    "retrieval": 5,
    "serving": 6,
    # the composition layer: reads the experiment config, builds objects, command entry points
    "app": 10,
    # the typed public API over the composition layer; the package top re-exports it
    "api": 11,
    # experiment drivers: may import anything below; nothing imports them
    "experiments": 12,
    # the dispatcher of subcommands (python -m torchrec_recsys)
    "cli": 13,
    "__main__": 14,
    "__init__": 0,
}
REEXPORTS = {("__init__", "api")}
"""(importer, imported) pairs allowed against the layers: the package top re-exports the API
(lazily, on first attribute access)."""
LIBRARY_TOP = 9
"""Layers up to this are library code."""
WHOLE_CONFIG_NAMES = {"ExperimentConfig", "load_config", "config_from_dict"}
"""Only the composition layer (and above) may read the whole experiment config."""


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            found.append((node.lineno, node.module, names))
            # ``from torchrec_recsys import app`` imports the package ``app``
            if node.module == PACKAGE:
                found += [(node.lineno, f"{PACKAGE}.{n}", []) for n in names]
    return found


def layering_violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that breaks the layering, one line each."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        own = parts[0]
        if own not in LAYERS:
            problems.append(f"{path}: {own!r} has no layer; add it to LAYERS")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module, names in _imports(tree):
            if not module.startswith(f"{PACKAGE}.") or module == PACKAGE:
                continue
            target = module.split(".")[1]
            where = f"{path}:{line} imports {module}"
            if target == own or (own, target) in REEXPORTS:
                continue
            if target not in LAYERS:
                problems.append(f"{where}: {target!r} has no layer")
            elif LAYERS[target] >= LAYERS[own] and LAYERS[own] <= LIBRARY_TOP:
                problems.append(f"{where}: library layer {own} may not import {target}")
            elif (
                target in ("api", "experiments", "cli", "__main__") and LAYERS[target] > LAYERS[own]
            ):
                problems.append(f"{where}: nothing below {target} may import it")
            elif target == "app" and LAYERS[own] < LAYERS["app"]:
                problems.append(f"{where}: the library may not import the composition layer")
            if (
                target == "config"
                and LAYERS[own] <= LIBRARY_TOP
                and WHOLE_CONFIG_NAMES & set(names)
            ):
                problems.append(f"{where}: library code takes config sections, not the whole")
    return problems


def _package_root() -> Path:
    return Path(torchrec_recsys.__file__).parent


def test_the_package_imports_only_downward() -> None:
    assert layering_violations(_package_root()) == []


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE
    shutil.copytree(_package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_violations(copy) == []
    # a deferred import inside a function counts as much as one at the top
    (copy / "data" / "planted.py").write_text(
        "def f():\n    from torchrec_recsys.app import builders\n    return builders\n"
    )
    (copy / "models" / "planted.py").write_text("import torchrec_recsys.training.trainer\n")
    (copy / "metrics" / "planted.py").write_text("from torchrec_recsys.models import tasks\n")
    (copy / "retrieval" / "planted.py").write_text(
        "from torchrec_recsys.config import ExperimentConfig\n"
    )
    (copy / "app" / "planted.py").write_text("from torchrec_recsys import experiments\n")
    (copy / "app" / "planted_api.py").write_text("from torchrec_recsys.api import train\n")
    (copy / "api_planted.py").write_text("")
    (copy / "newpkg.py").write_text("")
    problems = layering_violations(copy)
    joined = "\n".join(problems)
    assert "data/planted.py:2 imports torchrec_recsys.app" in joined
    assert "models/planted.py:1 imports torchrec_recsys.training.trainer" in joined
    assert "metrics/planted.py:1 imports torchrec_recsys.models" in joined  # same layer
    assert "not the whole" in joined
    assert "app/planted.py:1 imports torchrec_recsys.experiments" in joined
    assert "app/planted_api.py:1 imports torchrec_recsys.api: nothing below api" in joined
    assert "'newpkg' has no layer" in joined
    assert "'api_planted' has no layer" in joined
    assert len(problems) == 8
