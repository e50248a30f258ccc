"""Nothing unpickles user files and nothing listens beyond loopback unless asked.

A source scan of the package and the launch component (tests/_dist.py pickles results
between its own test processes through a private temporary folder; that is not user data
and is not scanned). DCP checkpoint metadata, which DCP itself would ``pickle.load``, goes
through an allow-list unpickler (tested in test_hostile_inputs.py).
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT

SOURCES = sorted(
    [*(REPO_ROOT / "torchrec_recsys").rglob("*.py"), REPO_ROOT / "launch" / "components.py"]
)


def _calls(text: str, name: str) -> list[str]:
    """Every ``name(...)`` call in ``text`` with its arguments (balanced parentheses)."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        calls.append(text[match.start() : end + 1])
    return calls


def _scan(pattern: str, predicate) -> list[str]:  # type: ignore[no-untyped-def]
    bad = []
    for path in SOURCES:
        for call in _calls(path.read_text(), pattern):
            if predicate(call):
                bad.append(f"{path.relative_to(REPO_ROOT)}: {' '.join(call.split())}")
    return bad


def test_sources_are_scanned() -> None:
    assert len(SOURCES) > 20
    assert _calls("x = torch.load(f(a), b)\n", "torch.load") == ["torch.load(f(a), b)"]


def test_every_torch_load_uses_weights_only() -> None:
    assert _scan("torch.load", lambda call: "weights_only=True" not in call) == []


@pytest.mark.parametrize("name", ["pickle.load", "pickle.loads", "cPickle.load", "dill.load"])
def test_no_plain_unpickling(name: str) -> None:
    assert _scan(name, lambda call: True) == []


def test_numpy_loads_refuse_pickles() -> None:
    assert _scan("np.load", lambda call: "allow_pickle=False" not in call) == []


# The server's listening socket binds the address `serve --host` was given: loopback by
# default, and a non-loopback one only with --allow-remote (both checked below).
SERVE_BIND = "torchrec_recsys/serving/service.py: .bind((host, port))"


def test_sockets_bind_to_loopback_only() -> None:
    assert _scan(".bind", lambda call: "127.0.0.1" not in call) == [SERVE_BIND]
    for path in SOURCES:
        assert "0.0.0.0" not in path.read_text(), path


def test_serve_binds_loopback_by_default_and_remote_only_when_allowed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from torchrec_recsys.app.parsers import serve_parser
    from torchrec_recsys.app.serving_commands import serve_main
    from torchrec_recsys.errors import UserError

    with pytest.raises(UserError, match="not a loopback address.*--allow-remote"):
        serve_main(["--registry", str(tmp_path), "--host", "10.1.2.3"])
    assert serve_parser().parse_args(["--registry", str(tmp_path)]).host == "127.0.0.1"
