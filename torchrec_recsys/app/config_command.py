"""``python -m torchrec_recsys config show``: the resolved config, each key with its meaning.

The output is a TOML file (it loads back as the same config): every key with its value, its
docstring from ``config.py`` and its allowed range as comments above it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from torchrec_recsys.app import parsers
from torchrec_recsys.config import ConfigKey, ExperimentConfig, config_keys, load_config


def toml_value(value: Any) -> str:
    """``value`` (a config value: str, bool, int, finite float, list or dict of them) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def render_config(cfg: ExperimentConfig, source: str) -> str:
    """The config as commented TOML: ``# doc`` and ``# range: ...`` lines above each key."""
    tables: dict[str, list[ConfigKey]] = {"": []}  # top-level keys first, then each table
    for entry in config_keys(cfg):
        tables.setdefault(entry.key.rpartition(".")[0], []).append(entry)
    lines = [f"# resolved config: {source}"]
    for table, entries in tables.items():
        if table:
            lines += ["", f"[{table}]"]
        for entry in entries:
            lines += ["", *_comments(entry)]
            lines.append(f"{entry.key.rpartition('.')[2]} = {toml_value(entry.value)}")
    return "\n".join(lines) + "\n"


def _comments(entry: ConfigKey) -> list[str]:
    out = [f"# {line}".rstrip() for line in entry.doc.splitlines()]
    if entry.allowed:
        out.append(f"# range: {entry.allowed}")
    return out


def main(argv: list[str]) -> None:
    """``config show [--config FILE] [--section.key=value ...]``: print the resolved config."""
    args, overrides = parsers.config_parser().parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    parts = ["defaults"]
    if args.config:
        parts.append(args.config)
    if overrides:
        parts.append(" ".join(overrides))
    print(render_config(cfg, " < ".join(parts)), end="")
