"""How an experiment driver leaves its results: a markdown table and the JSON behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchrec_recsys.errors import UserError
from torchrec_recsys.files import atomic_write_text


def write_report(out: str | Path, table: str, results: Any) -> None:
    """Write ``table`` to ``out`` and ``results`` to ``out`` with a ``.json`` suffix
    (atomically), print the table and where both went."""
    out = Path(out)
    atomic_write_text(out, table + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=2))
    print(table)
    print(f"wrote {out} and {out.with_suffix('.json')}")


def read_reports(paths: list[str]) -> list[Any]:
    """The JSON results that :func:`write_report` left at ``paths`` (for ``--merge``).

    Raises:
        UserError: a path that is missing or not JSON, named.
    """
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--merge {path!r} is not a readable ablation JSON ({e})") from None
    return parts
