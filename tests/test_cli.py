"""The command line: every ``--help`` answers from torch-free parsers, ``config show`` prints
the resolved config with each key's meaning, and bad input gets one ``error:`` line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from torchrec_recsys.app.config_command import render_config, toml_value
from torchrec_recsys.cli import PARSERS, SUBCOMMANDS, main
from torchrec_recsys.config import (
    ConfigError,
    ExperimentConfig,
    config_keys,
    config_to_dict,
    join_override_values,
    load_config,
)

HELP_ARGVS = [[name, "--help"] for name in SUBCOMMANDS] + [
    ["--help"],
    ["sid", "build", "--help"],
    ["sid", "report", "--help"],
    ["registry", "--root", "r", "canary", "--help"],
    ["config", "show", "--help"],
    ["--threads", "1", "train", "-h"],
]
HEAVY = ("torch", "torchrec", "fbgemm_gpu", "pandas", "faiss", "fastapi", "transformers")


def test_every_subcommand_has_a_parser() -> None:
    assert set(PARSERS) == set(SUBCOMMANDS)


@pytest.mark.parametrize("argv", HELP_ARGVS, ids=" ".join)
def test_help_exits_0_and_prints_usage(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if argv[0] == "sid" and len(argv) == 2:
        assert "build" in out and "report" in out
    if argv[:2] == ["sid", "build"]:
        assert "--levels" in out and "--out" in out


def test_help_imports_no_heavy_library() -> None:
    """In a fresh process: import the CLI and answer every --help; torch & co. stay unloaded."""
    script = (
        "import contextlib, io, json, sys\n"
        "from torchrec_recsys.cli import main\n"
        f"codes = []\nfor argv in {HELP_ARGVS!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes.append(main(argv))\n"
        f"print(json.dumps([codes, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    codes, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == [0] * len(HELP_ARGVS)
    assert loaded == []


def test_train_help_points_to_config_show(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m torchrec_recsys config show" in out
    assert "--section.key value" in out


def test_config_show_prints_each_key_with_doc_and_range(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "x.toml"
    config.write_text('name = "shown"\n[train]\nepochs = 5\n')
    argv = ["config", "show", "--config", str(config), "--train.batch_size", "64"]
    assert main([*argv, "--sharding.per_table={ t_item_id = 'row_wise' }"]) == 0
    out = capsys.readouterr().out
    # the output is TOML that loads back as the same resolved config
    expected = load_config(
        config, ["--train.batch_size=64", "--sharding.per_table={ t_item_id = 'row_wise' }"]
    )
    assert tomllib.loads(out) == config_to_dict(expected)
    assert expected.train.epochs == 5 and expected.train.batch_size == 64
    lines = out.splitlines()
    at = lines.index("batch_size = 64")
    assert lines[at - 2 : at] == [
        "# Examples per process per step (the global batch is this x world size).",
        "# range: positive",
    ]
    assert "# range: every element positive" in out  # model.dense_arch_layers
    assert lines[0].startswith("# resolved config: defaults < ")


def test_every_config_key_has_a_doc() -> None:
    keys = config_keys(ExperimentConfig())
    assert len(keys) > 50
    assert [k.key for k in keys if not k.doc] == []


def test_toml_value_forms() -> None:
    assert toml_value(True) == "true"
    assert toml_value('a "b"') == '"a \\"b\\""'
    assert toml_value([1, 2.5]) == "[1, 2.5]"
    assert toml_value({}) == "{}"
    assert tomllib.loads("v = " + toml_value({"t.x": "row_wise"}))["v"] == {"t.x": "row_wise"}
    cfg = ExperimentConfig()
    assert tomllib.loads(render_config(cfg, "defaults")) == config_to_dict(cfg)


def test_override_value_may_follow_its_key() -> None:
    assert join_override_values(["--train.epochs", "1", "--name", "x", "--train.seed=3"]) == [
        "--train.epochs=1",
        "--name=x",
        "--train.seed=3",
    ]
    cfg = load_config(None, ["--train.epochs", "1", "--model.tower_layers", "[16, 8]"])
    assert cfg.train.epochs == 1 and cfg.model.tower_layers == [16, 8]
    with pytest.raises(ConfigError, match=r"train.seed must be >= 0, got -1"):
        load_config(None, ["--train.seed", "-1"])  # a negative value is a value, not a flag
    with pytest.raises(ConfigError, match=r"'--train.epochs' has no value"):
        load_config(None, ["--train.epochs"])


def test_train_accepts_space_separated_overrides() -> None:
    from torchrec_recsys.app.train import parse_config

    cfg, args = parse_config(["--train.epochs", "1", "--model", "two_tower", "--name", "n"])
    assert cfg.train.epochs == 1 and cfg.model.name == "two_tower" and cfg.name == "n"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


BAD = [
    (
        ["train", "--config", "missing.toml"],
        "error: config file 'missing.toml' does not exist; expected a TOML file",
    ),
    (
        ["config", "show", "--config", "missing.toml"],
        "error: config file 'missing.toml' does not exist; expected a TOML file",
    ),
    (["trian"], "error: unknown subcommand 'trian'; expected one of train, synth, "),
    (
        ["train", "--config", "ok.toml", "--train.epoch=1"],
        "error: unknown config key 'train.epoch' in override '--train.epoch=1' "
        "(did you mean 'train.epochs'?); expected one of: train.batch_size, ",
    ),
    (
        ["config", "show", "--trian.epochs", "1"],
        "error: unknown config key 'trian' in override '--trian.epochs=1' (did you mean "
        "'train'?); expected one of: ",
    ),
    (["config", "show", "--config", "broken.toml"], "error: config file 'broken.toml' is not "),
    (["train", "--train.epochs"], "error: override '--train.epochs' has no value; expected "),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.toml").write_text(f'[train]\noutput_dir = "{tmp_path / "runs"}"\n')
    (tmp_path / "broken.toml").write_text("[train\nepochs = 1\n")
    before = _tree(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(message), captured.err
    if "broken" in argv[-1]:
        assert "is not valid TOML" in captured.err
    assert _tree(tmp_path) == before
