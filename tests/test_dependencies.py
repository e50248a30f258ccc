"""Every third-party import of the package is declared in ``pyproject.toml``.

Every ``import`` / ``from ... import`` in every module (at any depth, so a deferred import
inside a function counts too) is read with ``ast``, mapped to the distributions that provide
it (``importlib.metadata.packages_distributions``) and looked up among the distributions that
``pyproject.toml`` declares, in ``dependencies`` or in any extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

from packaging.requirements import Requirement

import torchrec_recsys

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = Path(torchrec_recsys.__file__).parent


def normalize(name: str) -> str:
    """A distribution name in PEP 503 form (``Prometheus_Client`` -> ``prometheus-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(root: Path) -> dict[str, list[str]]:
    """Top-level module -> ``file:line`` of each import of it, for every module in ``root``
    that is neither the standard library nor the package itself."""
    own = root.name
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != own and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def declared_distributions(pyproject: Path) -> set[str]:
    """Normalized names of every distribution in ``dependencies`` and every extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {normalize(Requirement(spec).name) for spec in specs}


def undeclared_imports(
    root: Path, pyproject: Path, providers: Mapping[str, list[str]] | None = None
) -> list[str]:
    """One line per third-party import under ``root`` that ``pyproject`` does not declare."""
    providers = importlib.metadata.packages_distributions() if providers is None else providers
    declared = declared_distributions(pyproject)
    problems = []
    for module, where in sorted(third_party_imports(root).items()):
        dists = sorted({normalize(d) for d in providers.get(module, [])})
        if not dists:
            problems.append(f"{module} (imported at {where[0]}) comes from no installed package")
        elif not declared & set(dists):
            problems.append(
                f"{module} (imported at {where[0]}) comes from {' or '.join(dists)}, "
                f"which {pyproject.name} does not declare"
            )
    return problems


def test_every_third_party_import_is_declared() -> None:
    assert undeclared_imports(PACKAGE_ROOT, REPO_ROOT / "pyproject.toml") == []


def test_the_imports_found_include_the_deferred_ones() -> None:
    found = third_party_imports(PACKAGE_ROOT)
    # uvicorn and lightgbm are imported only inside functions
    assert {"torch", "torchrec", "fastapi", "uvicorn", "lightgbm", "pydantic"} <= set(found)
    assert "json" not in found and "torchrec_recsys" not in found


def test_a_planted_undeclared_import_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "fakepkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("import json\nimport numpy as np\n")
    (package / "sub" / "mod.py").write_text(
        "from fakepkg import helpers\n"
        "def f():\n"
        "    import lightgbm  # deferred\n"
        "    from yaml import safe_load\n"
        "    import not_a_real_module_anywhere\n"
    )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "fakepkg"\ndependencies = ["numpy>=2"]\n')
    problems = undeclared_imports(package, pyproject)
    joined = "\n".join(problems)
    assert "lightgbm (imported at sub/mod.py:3) comes from lightgbm" in joined
    assert "yaml (imported at sub/mod.py:4) comes from pyyaml" in joined
    assert "not_a_real_module_anywhere" in joined and "from no installed package" in joined
    assert len(problems) == 3  # numpy is declared; json is stdlib; fakepkg is the package

    # declaring them in an extra is enough
    pyproject.write_text(
        '[project]\nname = "fakepkg"\ndependencies = ["numpy>=2"]\n'
        '[project.optional-dependencies]\nextra = ["LightGBM==4.7.0", "PyYAML"]\n'
    )
    assert undeclared_imports(package, pyproject) == [problems[1]]


def requirement_pins(path: Path) -> dict[str, str]:
    """Normalized name -> pinned version of every ``name==version`` line of a requirements
    file and of the files it includes with ``-r``."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(requirement_pins(path.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def test_pyproject_pins_match_the_requirement_files() -> None:
    files = ["requirements-cpu.txt", "requirements-gpu.txt", "requirements-dev.txt"]
    pinned: dict[str, set[str]] = {}
    for name in files:
        for dist, version in requirement_pins(REPO_ROOT / name).items():
            pinned.setdefault(dist, set()).add(version)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    exact = [Requirement(s) for s in specs if "==" in s]
    assert len(exact) > 5
    for req in exact:
        version = str(req.specifier).removeprefix("==")
        assert version in pinned.get(normalize(req.name), set()), f"{req} is not pinned so"


def test_the_ci_install_command_pins_the_cpu_torch() -> None:
    """.ci/run installs torch on its own first (from PyTorch's CPU index): the same version as
    requirements-cpu.txt, so the second command finds it installed."""
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    torch = requirement_pins(REPO_ROOT / "requirements-cpu.txt")["torch"]
    assert f"--extra-index-url https://download.pytorch.org/whl/cpu torch=={torch}" in ci
    for gpu in REPO_ROOT.glob("requirements-gpu*.txt"):  # each names its torch in its header
        assert f"pip install torch=={requirement_pins(gpu)['torch']}\n" in gpu.read_text()
