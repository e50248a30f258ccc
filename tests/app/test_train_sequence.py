"""End to end: SASRec and the generative retriever train through ``main(argv)`` like the
other models (summary, checkpoints, resume), and ``recommend`` decodes with a generative run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from torchrec_recsys.app.train import main
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.semantic_ids.store import SIDTable, save_sid_table
from torchrec_recsys.training.checkpoint_io import latest_checkpoint


def _sid_table(folder: Path, num_items: int = 80) -> Path:
    """Unique random (level 1, level 2) codes for the synthetic items i0..i79."""
    flat = np.random.default_rng(0).permutation(10 * 8)[:num_items]
    codes = np.stack([flat // 8, flat % 8], axis=1)  # [I, 2]
    ids = [f"i{i}" for i in range(num_items)]
    return save_sid_table(folder, SIDTable(ids, codes, [10, 8], np.zeros((1, 10, 4), np.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sasrec", "generative", "generative:summed"])
def test_sequence_model_trains_resumes_and_reports(
    synthetic_paths,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    model: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, _, generative_input = model.partition(":")
    args = [
        *tiny_overrides(synthetic_paths, tmp_path),
        f"--model.name={model}",
        f"--sequence.generative_input={generative_input or 'tokens'}",
        f"--semantic_ids.table_path={_sid_table(tmp_path / 'sid')}",
        "--semantic_ids.levels=1",  # the table: 10 level-1 codes + an 8-way collision level
        "--semantic_ids.codebook_size=10",
        "--sequence.max_history=5",
        "--sequence.heads=2",
        "--sequence.ff_dim=16",
        "--sequence.beam_width=10",
        "--train.max_steps_per_epoch=3",
        "--optimizer.schedule=warmup_cosine",  # resumed on the same curve
        "--optimizer.warmup_steps=2",
    ]
    if model == "generative":
        args.append("--sequence.cold_share_grid=[0.0, 1.0]")
    first = main([*args, "--train.epochs=1"])
    run_dir = Path(first["run_dir"])
    test = first["test"]
    assert 0.0 <= test["recall@10"] <= 1.0 and 0.0 <= test["mrr"] <= 1.0
    assert "popularity" in first["baselines_test"]
    if model == "generative":
        assert test["invalid_rate"] == 0.0
        assert first["cold_share"]["chosen"] in (0.0, 1.0)
        assert set(first["cold_share"]["val_recall@10"]) == {0.0, 1.0}
        assert "recall@20" not in test  # beyond the beam of 10
        # 80 items over all 10 level-1 codes, 8 each; the second column is the collision level
        codes = first["sid_codes"]
        assert codes["utilisation"] == [1.0] and codes["collision_rate"] == pytest.approx(0.875)
        assert codes["perplexity"] == [pytest.approx(10.0)]
        assert codes["codebook_sizes"] == [10] and codes["collision_level_size"] == 8
    else:
        assert "recall@100" not in test and "recall@20" in test  # 80 items, full ranking
        assert first["sid_codes"] is None
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "step_00000003"

    resumed = main([*args, "--train.epochs=2", "--resume"])
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["final_state"]["global_step"] == 6

    if model == "generative":
        capsys.readouterr()
        cli_main(["recommend", "--retriever", str(run_dir), "--user", "u1", "-k", "3"])
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("user u1: 5 history items, beam 10, top 3 generated")
        assert len(out) == 4 and "log p =" in out[1]
