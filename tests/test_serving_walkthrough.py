"""docs/serving.md's walkthrough shows exactly the commands scripts/serving_walkthrough.py runs.

Running the walkthrough takes minutes (two trainings, a server, a few hundred requests), so
the test suite checks only that the page and the script agree on the commands, in order;
``python scripts/serving_walkthrough.py`` runs them and compares the output.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "serving_walkthrough", REPO / "scripts" / "serving_walkthrough.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_the_scripts_commands_in_order() -> None:
    walkthrough = _script()
    page = walkthrough.PAGE.read_text()
    begin, end = walkthrough.page_block(page)
    shown = [line[2:] for line in page[begin:end].splitlines() if line.startswith("$ ")]
    assert shown == [step.command for step in walkthrough.steps(18931)]


def test_the_check_ignores_only_what_changes_between_runs() -> None:
    masked = _script().masked
    a = '{"request_id":"' + "a" * 32 + '","latency_ms":4.2,"process":12}'
    b = '{"request_id":"' + "b" * 32 + '","latency_ms":9.9,"process":34}'
    assert masked(a) == masked(b)
    assert masked('"items":[{"item_id":"i15"}]') != masked('"items":[{"item_id":"i16"}]')
