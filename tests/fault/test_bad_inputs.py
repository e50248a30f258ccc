"""The catalogue of bad inputs: each row is one bad setting, degenerate split,
damaged file or misuse, how it is made, the exit code and a fragment of the one-line message.

Every row runs ``torchrec_recsys.cli.main`` in-process (a traceback fails the test: ``main``
catches only ``UserError``) and then checks the promise about files: by default that nothing
at all was written or changed under the test's folder (no run folder, no lock, no metadata);
a row with ``check`` states its own promise instead (e.g. a diverged run keeps no checkpoint
of a non-finite step and writes no summary). Rows that exit 0 (``WARNED``) must say what is
suspicious on stderr and in the run's ``summary.json``.

The "Errors" page of the docs (docs/errors.md) lists the same inputs with what each gets.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from _files import tree_snapshot
from conftest import REPO_ROOT, tiny_config_file

from torchrec_recsys.app.run_folder import LOCK_FILE, RUN_META_FILE, STALE_AFTER_S
from torchrec_recsys.cli import main
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.metrics.retrieval import recall_ndcg, target_ranks
from torchrec_recsys.observability.progress import Progress


@dataclass
class Env:
    """One test's folder, the tiny synthetic data and a finished run to misuse."""

    root: Path
    data: SyntheticPaths
    finished: Path  # a complete 2-epoch DLRM run (copy it before touching it)

    @property
    def out(self) -> Path:
        return self.root / "out"

    def train(self, *extra: str) -> list[str]:
        config = tiny_config_file(self.data, self.root)
        return ["train", "--config", str(config), f"--train.output_dir={self.out}", *extra]

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def files(
        self, interactions: Path | None = None, items: Path | None = None, users: Path | None = None
    ) -> list[str]:
        """Overrides pointing the data at these files (the synthetic ones otherwise)."""
        return [
            f"--data.interactions_path={interactions or self.data.interactions}",
            f"--data.items_path={items or self.data.items}",
            f"--data.users_path={users or self.data.users}",
        ]

    def copy_finished(self) -> Path:
        run = self.out / "tiny_synthetic" / "old"
        shutil.copytree(self.finished, run)
        return run


@dataclass(frozen=True)
class Bad:
    """One bad input: ``make`` prepares files and returns the CLI argv."""

    id: str
    kind: int  # 1 settings, 2 degenerate data, 3 readers, 4 run folders (0 = any other)
    make: Callable[[Env], list[str]]
    fragment: str
    code: int = 2
    check: Callable[[Env], None] | None = None  # own promise instead of "nothing written"


def _interactions(env: Env, rows: list[str], name: str = "inter.csv") -> Path:
    return env.write(name, "user_id,item_id,rating,timestamp\n" + "".join(r + "\n" for r in rows))


def _one_per_user(env: Env) -> list[str]:
    rows = [f"u{u},i{u % 80},4,{u}" for u in range(200)]
    return env.train(*env.files(interactions=_interactions(env, rows)), "--train.batch_size=8")


def _truncated_parquet(env: Env) -> list[str]:
    path = env.root / "inter.parquet"
    pd.read_csv(env.data.interactions).to_parquet(path)
    path.write_bytes(path.read_bytes()[:300])
    return env.train(*env.files(interactions=path))


def _lock(env: Env, pid: int, host: str, age_s: float = 0.0) -> Path:
    """A lock file of ``pid`` on ``host`` in run ``job1``, last touched ``age_s`` ago."""
    run = env.out / "tiny_synthetic" / "job1"
    run.mkdir(parents=True)
    lock = run / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": host, "created_unix": 0}))
    touched = time.time() - age_s
    os.utime(lock, (touched, touched))
    return lock


def _locked_by_live_process(env: Env) -> list[str]:
    _lock(env, os.getppid(), socket.gethostname())
    return env.train("--run-id=job1")


def _locked_from_another_host(env: Env) -> list[str]:
    _lock(env, 1, "another-host")  # its heartbeat is fresh: alive as far as anyone can tell
    return env.train("--run-id=job1")


def _resume_changed(*overrides: str) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        run = env.copy_finished()
        return env.train("--resume", "--run-dir", str(run), "--train.epochs=2", *overrides)

    return make


def _diverged(env: Env) -> None:
    """A diverged run: no summary, no checkpoint (it failed before the first), lock released."""
    (run,) = (env.out / "tiny_synthetic").iterdir()
    assert not (run / "summary.json").exists()
    assert not (run / LOCK_FILE).exists()
    assert not list(run.glob("checkpoints/step_*"))


BAD: list[Bad] = [
    # 1. settings: every field's type and range, in one place
    Bad(
        "sparse_lr_inf",
        1,
        lambda e: e.train("--optimizer.sparse_lr=inf"),
        "optimizer.sparse_lr must be a finite number, got inf",
    ),
    Bad(
        "dense_lr_nan",
        1,
        lambda e: e.train("--optimizer.dense_lr=nan"),
        "optimizer.dense_lr must be a finite number, got nan",
    ),
    Bad(
        "dense_lr_negative",
        1,
        lambda e: e.train("--optimizer.dense_lr=-0.1"),
        "optimizer.dense_lr must be positive, got -0.1",
    ),
    Bad(
        "temperature_nan",
        1,
        lambda e: e.train("--model.temperature=nan"),
        "model.temperature must be a finite number, got nan",
    ),
    Bad(
        "positive_rating_nan",
        1,
        lambda e: e.train("--data.positive_rating=nan"),
        "data.positive_rating must be a finite number, got nan",
    ),
    Bad(
        "test_fraction_one",
        1,
        lambda e: e.train("--data.split=random", "--data.random_test_fraction=1.0"),
        "data.random_test_fraction must be in [0, 1), got 1.0",
    ),
    Bad(
        "val_fraction_negative",
        1,
        lambda e: e.train("--data.split=random", "--data.random_val_fraction=-0.1"),
        "data.random_val_fraction must be in [0, 1), got -0.1",
    ),
    Bad(
        "val_per_user_negative",
        1,
        lambda e: e.train("--data.val_per_user=-1"),
        "data.val_per_user must be >= 0, got -1",
    ),
    Bad(
        "test_per_user_negative",
        1,
        lambda e: e.train("--data.test_per_user=-2"),
        "data.test_per_user must be >= 0, got -2",
    ),
    Bad(
        "log_every_zero",
        1,
        lambda e: e.train("--train.log_every=0"),
        "train.log_every must be positive, got 0",
    ),
    Bad(
        "zero_width_dense_layer",
        1,
        lambda e: e.train("--model.dense_arch_layers=[0, 8]"),
        "every element of model.dense_arch_layers must be positive, got [0, 8]",
    ),
    Bad(
        "zero_width_tower_layer",
        1,
        lambda e: e.train("--model.tower_layers=[16, 0]"),
        "every element of model.tower_layers must be positive, got [16, 0]",
    ),
    Bad(
        "empty_separator",
        1,
        lambda e: e.train("--data.multi_value_separator="),
        "data.multi_value_separator must not be empty",
    ),
    Bad(
        "cold_fraction_one",
        1,
        lambda e: e.train("--data.cold_item_fraction=1"),
        "data.cold_item_fraction must be in [0, 1), got 1.0",
    ),
    Bad(
        "diverging_lr",
        1,
        lambda e: e.train("--optimizer.sparse_lr=1e30", "--optimizer.dense_lr=1e30"),
        "the training loss became non-finite at global step",
        check=_diverged,
    ),
    # 2. degenerate data: a split the run needs is empty, or 0 training steps
    Bad(
        "smaller_than_one_batch",
        2,
        lambda e: e.train("--train.batch_size=5000"),
        "fewer than one global batch of train.batch_size x processes = 5000 x 1",
    ),
    Bad(
        "all_items_cold",
        2,
        lambda e: e.train("--data.cold_item_fraction=0.99999"),
        "the training split is empty (train=0",
    ),
    Bad(
        "one_interaction_per_user",
        2,
        _one_per_user,
        "the test split is empty (train=200, val=0, test=0 examples)",
    ),
    Bad(
        "holdout_larger_than_any_user",
        2,
        lambda e: e.train("--data.val_per_user=30"),
        "the most any user has in training is 25",
    ),
    Bad(
        "all_labels_positive",
        2,
        lambda e: e.train("--data.positive_rating=0"),
        "every train label is 1: all",
    ),
    Bad(
        "all_labels_negative",
        2,
        lambda e: e.train("--data.positive_rating=100"),
        "every train label is 0: all",
    ),
    # 3. readers
    Bad(
        "empty_interactions_file",
        3,
        lambda e: e.train(*e.files(interactions=e.write("inter.csv", ""))),
        "is empty",
    ),
    Bad(
        "header_only_interactions",
        3,
        lambda e: e.train(*e.files(interactions=_interactions(e, []))),
        "has a header but no rows",
    ),
    Bad(
        "header_only_items",
        3,
        lambda e: e.train(*e.files(items=e.write("items.csv", "item_id,title,genres,decade\n"))),
        "has a header but no rows",
    ),
    Bad("truncated_parquet", 3, _truncated_parquet, "is not a readable parquet file"),
    Bad(
        "non_utf8_interactions",
        3,
        lambda e: e.train(
            *e.files(
                interactions=e.write(
                    "inter.csv", b"user_id,item_id,rating,timestamp\nu\xff\xfe,i1,4,1\n"
                )
            )
        ),
        "is not UTF-8 text",
    ),
    Bad(
        "non_utf8_config",
        3,
        lambda e: ["train", "--config", str(e.write("bad.toml", b"name = '\xff'\n"))],
        "is not UTF-8 text",
    ),
    # 4. run folders
    Bad(
        "name_escapes_output_dir",
        4,
        lambda e: e.train("--name=../../x"),
        "name = '../../x' is not a plain folder name",
    ),
    Bad(
        "run_id_escapes_output_dir",
        4,
        lambda e: e.train("--run-id=../x"),
        "--run-id = '../x' is not a plain folder name",
    ),
    Bad(
        "fresh_run_into_finished_run",
        4,
        lambda e: e.train("--run-dir", str(e.copy_finished())),
        "already holds best, checkpoints, config.json",
    ),
    Bad("same_run_id_as_a_live_job", 4, _locked_by_live_process, "is in use by process"),
    Bad(
        "same_run_id_as_a_job_on_another_host",
        4,
        _locked_from_another_host,
        "is in use by process 1 on 'another-host'",
    ),
    Bad(
        "resume_with_other_embedding_dim",
        4,
        _resume_changed("--features.embedding_dim=16", "--model.dense_arch_layers=[16, 16]"),
        "this run changes model.dense_arch_layers ([16, 8] -> [16, 16]); "
        "features.embedding_dim (8 -> 16)",
    ),
    Bad(
        "resume_with_other_model",
        4,
        _resume_changed("--model.name=two_tower"),
        "this run changes model.name ('dlrm' -> 'two_tower')",
    ),
    # 0. other misuse
    Bad(
        "resume_with_fewer_epochs_than_done",
        0,
        lambda e: e.train("--resume", "--run-dir", str(e.copy_finished()), "--train.epochs=1"),
        "has finished 2 epochs, more than train.epochs = 1",
    ),
    Bad("negative_seed", 0, lambda e: e.train("--train.seed=-1"), "train.seed must be >= 0"),
    Bad(
        "zero_eval_batch",
        0,
        lambda e: e.train("--train.eval_batch_size=0"),
        "train.eval_batch_size must be positive",
    ),
    Bad(
        "fractions_sum_to_one",
        0,
        lambda e: e.train(
            "--data.split=random",
            "--data.random_val_fraction=0.5",
            "--data.random_test_fraction=0.5",
        ),
        "data.random_val_fraction + data.random_test_fraction must be < 1",
    ),
    Bad(
        "infinite_memory_budget",
        0,
        lambda e: e.train("--sharding.memory_budget_mb=inf"),
        "sharding.memory_budget_mb must be a finite number",
    ),
    Bad(
        "zero_width_over_layer",
        0,
        lambda e: e.train("--model.over_arch_layers=[0, 1]"),
        "every element of model.over_arch_layers must be positive",
    ),
    Bad(
        "codebook_of_one",
        0,
        lambda e: e.train("--semantic_ids.codebook_size=1"),
        "semantic_ids.codebook_size must be >= 2",
    ),
    Bad(
        "no_test_holdout",
        0,
        lambda e: e.train("--data.test_per_user=0"),
        "data.test_per_user must be >= 1",
    ),
    Bad(
        "tiny_random_test_fraction",
        0,
        lambda e: e.train("--data.split=random", "--data.random_test_fraction=0.00001"),
        "the test split is empty",
    ),
    Bad(
        "users_file_with_other_ids",
        0,
        lambda e: e.train(
            *e.files(
                users=e.write(
                    "users.csv", "user_id,age_group,gender,occupation\n1,20s,F,x\n2,30s,M,y\n"
                )
            )
        ),
        "none of the 60 users of the interactions is in the users file",
    ),
    Bad(
        "empty_item_id_in_items",
        0,
        lambda e: e.train(
            *e.files(items=e.write("items.csv", "item_id,title,genres,decade\n,a,Drama,1990s\n"))
        ),
        "row(s) with an empty item_id",
    ),
    Bad(
        "empty_users_file",
        0,
        lambda e: e.train(*e.files(users=e.write("users.csv", ""))),
        "users file",
    ),
    Bad(
        "run_dir_is_a_file",
        0,
        lambda e: e.train("--run-dir", str(e.write("a_file", "x"))),
        "exists and is not a folder",
    ),
    Bad(
        "resume_without_any_run",
        0,
        lambda e: e.train("--resume"),
        "--resume found no run of 'tiny_synthetic'",
    ),
    Bad("non_numeric_config_value", 0, lambda e: e.train("--train.epochs=two"), "train.epochs"),
    Bad("unknown_subcommand", 0, lambda e: ["trian"], "unknown subcommand 'trian'"),
    Bad(
        "no_sparse_features",
        0,
        lambda e: e.train(
            "--data.item_categorical_columns=[]",
            "--data.user_categorical_columns=[]",
            "--features.use_item_id=false",
            "--features.use_user_id=false",
        ),
        "model.name = 'dlrm' needs sparse features, but there are none",
    ),
    Bad(
        "two_tower_without_item_features",
        0,
        lambda e: e.train(
            "--model.name=two_tower",
            "--data.item_categorical_columns=[]",
            "--features.use_item_id=false",
        ),
        "the item tower has none",
    ),
    Bad(
        "semantic_ids_without_text",
        0,
        lambda e: e.train("--data.item_text_columns=[]", "--semantic_ids.enabled=true"),
        "data.item_text_columns is empty",
    ),
    Bad(
        "config_is_a_folder",
        0,
        lambda e: ["train", "--config", str(e.root)],
        "is a folder, not a file",
    ),
    Bad(
        "run_dir_below_a_file",
        0,
        lambda e: e.train("--run-dir", str(e.write("a_file", "x") / "run")),
        "cannot create run directory",
    ),
    Bad(
        "synth_zero_users",
        0,
        lambda e: ["synth", "--out", str(e.root / "s"), "--users", "0"],
        "--users 0 is invalid",
    ),
    Bad(
        "synth_into_a_file",
        0,
        lambda e: ["synth", "--out", str(e.write("f", "x"))],
        "exists and is not a folder",
    ),
    Bad(
        "sid_build_zero_levels",
        0,
        lambda e: [
            "sid",
            "build",
            "--config",
            str(tiny_config_file(e.data, e.root)),
            "--out",
            str(e.root / "sid"),
            "--levels",
            "0",
        ],
        "semantic_ids.levels must be positive, got 0",
    ),
]


@pytest.fixture(scope="module")
def finished_run(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    config = tiny_config_file(synthetic_paths, root)
    argv = ["train", "--config", str(config), f"--train.output_dir={root}", "--train.epochs=2"]
    assert main([*argv, "--run-id=done"]) == 0
    return root / "tiny_synthetic" / "done"


@pytest.fixture
def env(synthetic_paths: SyntheticPaths, finished_run: Path, tmp_path: Path) -> Env:
    return Env(tmp_path, synthetic_paths, finished_run)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_input_gets_one_line_and_writes_nothing(
    case: Bad, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.make(env)
    capsys.readouterr()
    before = tree_snapshot(env.root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err[-2000:]
    assert case.fragment in err, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-2000:]
    if case.check is not None:
        case.check(env)
    else:
        assert tree_snapshot(env.root) == before, "a refused run wrote or changed files"


def test_catalogue_covers_every_class_and_more() -> None:
    classes = {c.kind for c in BAD}
    assert {1, 2, 3, 4} <= classes  # warnings, locks and launch: their own tests below
    assert sum(c.kind == 0 for c in BAD) + len(SERVING) >= 10


# --- suspicious but usable input: exit 0, said on stderr and in the summary ----------------


@dataclass(frozen=True)
class Warned:
    id: str
    kind: int
    make: Callable[[Env], list[str]]
    fragment: str


def _duplicate_rows(env: Env) -> list[str]:
    text = env.data.interactions.read_text()
    first_row = text.splitlines()[1]
    return env.train(*env.files(interactions=env.write("inter.csv", text + first_row + "\n")))


def _padded_ids(env: Env) -> list[str]:
    lines = env.data.users.read_text().splitlines()
    padded = [lines[0], *(f" {line}" for line in lines[1:])]  # " u0,40s,F,engineer"
    users = env.write("users.csv", "\n".join(padded) + "\n")
    return env.train(*env.files(users=users))


WARNED = [
    Warned("duplicate_rows", 3, _duplicate_rows, "1 duplicate row(s)"),
    Warned(
        "wrong_separator",
        3,
        lambda e: e.train("--data.multi_value_separator=,"),
        "set data.multi_value_separator = '|' if they are lists",
    ),
    Warned(
        "all_test_labels_one_class",
        2,
        lambda e: e.train(*e.files(interactions=_test_all_positive(e))),
        "every test label is 1",
    ),
    Warned(
        "users_missing_from_users_file",
        0,
        lambda e: e.train(*e.files(users=_users_without_first(e))),
        "1 of 60 users of the interactions are missing from the users file",
    ),
]


def _test_all_positive(env: Env) -> Path:
    frame = pd.read_csv(env.data.interactions)
    latest = frame.groupby("user_id")["timestamp"].transform("max") == frame["timestamp"]
    frame.loc[latest, "rating"] = 5.0
    frame.loc[~latest & (frame["rating"] >= 4), "rating"] = 1.0
    frame.loc[frame.index[~latest][:300], "rating"] = 5.0  # train keeps both classes
    path = env.root / "inter.csv"
    frame.to_csv(path, index=False)
    return path


def _users_without_first(env: Env) -> Path:
    lines = env.data.users.read_text().splitlines()
    return env.write("users.csv", "\n".join([lines[0], *lines[2:]]) + "\n")


@pytest.mark.parametrize("case", WARNED, ids=lambda c: c.id)
def test_suspicious_input_is_said_on_stderr_and_in_the_summary(
    case: Warned, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.make(env)
    assert main([*argv, "--train.epochs=1"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and case.fragment in err, err[-2000:]
    (summary,) = env.out.glob("*/*/summary.json")
    assert any(case.fragment in w for w in json.loads(summary.read_text())["warnings"])


def test_padded_ids_in_the_users_file_keep_their_features(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """``" u0"`` in the users file is ``u0`` (as in the interactions): nothing is lost."""
    assert main([*_padded_ids(env), "--train.epochs=1"]) == 0
    assert "missing from the users file" not in capsys.readouterr().err
    (summary,) = env.out.glob("*/*/summary.json")
    assert json.loads(summary.read_text())["warnings"] == []


# --- run folders: stale locks, newest run, nothing overwritten by a failed resume ---------


@pytest.mark.parametrize("where", ["dead_process_here", "silent_process_elsewhere"])
def test_stale_lock_is_taken_over(env: Env, where: str) -> None:
    if where == "dead_process_here":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        lock = _lock(env, dead.pid, socket.gethostname())
    else:  # no heartbeat for longer than STALE_AFTER_S
        lock = _lock(env, 1, "another-host", age_s=STALE_AFTER_S + 1)
    assert main(env.train("--run-id=job1", "--train.epochs=1")) == 0
    assert (lock.parent / "summary.json").exists() and not lock.exists()


def test_failed_resume_leaves_the_old_run_as_it_was(env: Env) -> None:
    run = env.copy_finished()
    before = tree_snapshot(run)
    argv = env.train("--resume", "--run-dir", str(run), "--model.name=two_tower")
    assert main(argv) == 2
    assert tree_snapshot(run) == before


def test_resume_picks_the_newest_run_by_recorded_time_not_by_name(env: Env) -> None:
    root = env.out / "tiny_synthetic"
    named = env.copy_finished()  # "old": created long ago ...
    (named / RUN_META_FILE).write_text(json.dumps({"created_unix": 1.0}))
    newer = root / "000-sorts-first"
    shutil.copytree(named, newer)
    (newer / RUN_META_FILE).write_text(json.dumps({"created_unix": 2.0}))
    (newer / "summary.json").unlink()
    untouched = tree_snapshot(named)
    assert main(env.train("--resume", "--train.epochs=2")) == 0
    assert (newer / "summary.json").exists()  # the newer one was resumed ...
    assert tree_snapshot(named) == untouched  # ... not the one whose name sorts last


def test_auto_named_runs_in_the_same_second_get_separate_folders(env: Env) -> None:
    from torchrec_recsys.app.run_folder import new_run_dir

    root = env.out / "x"
    first = new_run_dir(root)
    first.mkdir(parents=True)
    assert new_run_dir(root) != first


# --- launch ----------------------------------------------------------------------------


def test_component_does_not_override_the_configs_model() -> None:
    sys.path.insert(0, str(REPO_ROOT / "launch"))
    from components import train

    (role,) = train(config="configs/ml100k_two_tower.toml", j="1x2").roles
    assert "--model" not in role.args[-1]
    (role,) = train(config="configs/ml100k_two_tower.toml", model="dlrm").roles
    assert "--model dlrm" in role.args[-1]


@pytest.mark.parametrize("j", ["abc", "1x0", "0x2", "1x2x3"])
def test_component_names_a_bad_j(j: str) -> None:
    sys.path.insert(0, str(REPO_ROOT / "launch"))
    from components import train

    with pytest.raises(ValueError, match=f"-j '{j}' is invalid; expected"):
        train(j=j)


# --- serving-side checks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("served")
    config = tiny_config_file(synthetic_paths, root)
    base = ["train", "--config", str(config), f"--train.output_dir={root}", "--train.epochs=1"]
    runs = {
        "tt": [*base, "--name=tt", "--model", "two_tower", "--run-id=a"],
        "tt_other": [*base, "--name=tt", "--model", "two_tower", "--run-id=b", "--train.seed=1"],
        "dlrm": [*base, "--name=dlrm", "--run-id=a"],
    }
    for argv in runs.values():
        assert main(argv) == 0
    paths = {
        "root": root,
        "tt": root / "tt" / "a",
        "tt_other": root / "tt" / "b",
        "dlrm": root / "dlrm" / "a",
    }
    for name in ("tt", "tt_other"):
        assert main(["export", "--run-dir", str(paths[name])]) == 0
    return paths


def _recommend(s: dict, *extra: str) -> list[str]:
    argv = ["recommend", "--retriever", str(s["tt"]), "--ranker", str(s["dlrm"])]
    return [*argv, "--candidates", "20", *extra]  # (later flags win)


def _evaluate(s: dict, *extra: str) -> list[str]:
    return ["evaluate-pipeline", "--retriever", str(s["tt"]), "--ranker", str(s["dlrm"]), *extra]


SERVING: list[tuple[str, Callable[[dict], list[str]], str]] = [
    ("k_zero", lambda s: _recommend(s, "--user", "u1", "-k", "0"), "-k 0 is invalid"),
    (
        "candidates_negative",
        lambda s: _recommend(s, "--user", "u1", "--candidates", "-1"),
        "--candidates -1 is invalid",
    ),
    (
        "unknown_history_item",
        lambda s: _recommend(s, "--user", "new", "--history", "i1,nope"),
        "--history item 'nope' is not in the retriever's catalogue",
    ),
    (
        "index_of_another_run",
        lambda s: _recommend(s, "--user", "u1", "--index", str(s["tt_other"] / "index_flat")),
        "was built from checkpoint",
    ),
    (
        "k_above_candidates",
        lambda s: _evaluate(s, "-k", "20", "--candidates", "10"),
        "-k 20 exceeds --candidates 10",
    ),
    (
        "evaluate_more_candidates_than_items",
        lambda s: _evaluate(s, "--candidates", "1000"),
        "--candidates 1000 exceeds the 80 catalogue items",
    ),
    (
        "ranker_is_not_a_run",
        lambda s: _recommend(s, "--user", "u1") + ["--ranker", str(s["root"])],
        "is not a run directory",
    ),
    (
        "export_over_an_existing_index",
        lambda s: ["export", "--run-dir", str(s["tt"])],
        "already exists; pass --overwrite to replace it",
    ),
    (
        "evaluate_out_in_a_missing_folder",
        lambda s: _evaluate(s, "--candidates", "20", "--out", str(s["root"] / "no" / "m.json")),
        "its folder does not exist",
    ),
]


@pytest.mark.parametrize(("id_", "make", "fragment"), SERVING, ids=[c[0] for c in SERVING])
def test_serving_misuse_gets_one_line(
    served: dict,
    id_: str,
    make: Callable[[dict], list[str]],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = tree_snapshot(served["root"])
    capsys.readouterr()
    assert main(make(served)) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err[-2000:]
    assert tree_snapshot(served["root"]) == before


def test_damaged_run_config_is_a_clear_error(
    served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "tt"
    shutil.copytree(served["tt"], broken)
    (broken / "config.json").write_text("{not json")
    argv = ["recommend", "--retriever", str(broken), "--ranker", str(served["dlrm"])]
    assert main([*argv, "--user", "u1"]) == 2
    assert "is not readable JSON" in capsys.readouterr().err


def test_cold_start_history_is_not_recommended_back(
    served: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    history = ["i0", "i1", "i2", "i3", "i4"]
    capsys.readouterr()
    argv = _recommend(served, "--user", "new", "--history", ",".join(history), "-k", "20")
    assert main([*argv, "--candidates", "70"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    recommended = {row.split()[1] for row in rows}
    assert len(recommended) == 20 and not recommended & set(history)


# --- metrics and progress ------------------------------------------------------------------


def test_nan_scores_are_misses() -> None:
    items = torch.randn(10, 4)
    nan_queries = torch.full((3, 4), float("nan"))
    metrics = recall_ndcg(target_ranks(nan_queries, items, torch.tensor([0, 1, 2])), (10,))
    assert metrics == {"recall@10": 0.0, "ndcg@10": 0.0}


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_without_a_terminal_prints_about_ten_lines_per_epoch() -> None:
    stream = _Pipe()
    bar = Progress(total=1504, initial=0, desc="epoch 1/1", enabled=True, stream=stream)
    bar.set_loss(0.5)
    for _ in range(1504):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("epoch 1/1: 1504/1504 steps (100%)")
    assert "loss=0.5000" in lines[-1]
    quiet = _Pipe()
    bar = Progress(total=100, initial=0, desc="e", enabled=False, stream=quiet)
    for _ in range(100):
        bar.update()
    assert quiet.getvalue() == ""


def test_byte_order_mark_is_not_part_of_the_first_column(env: Env) -> None:
    from torchrec_recsys.data.readers import read_files

    bom = env.write("inter.csv", b"\xef\xbb\xbf" + env.data.interactions.read_bytes())
    raw = read_files(str(bom), str(env.data.items), "", ["title"], [])
    assert raw.interactions["user_id"].iloc[0] == "u0"
