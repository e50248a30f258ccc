"""A SID table learned at training start-up: cached, and quiet when progress is off."""

from __future__ import annotations

from pathlib import Path

import pytest
from sid_testdata import one_torch_thread  # noqa: F401 (autouse fixture)

from torchrec_recsys.config import SemanticIdConfig
from torchrec_recsys.semantic_ids.encoder import default_model_dir
from torchrec_recsys.semantic_ids.features import cached_sid_table

TITLES = ["Toy Story", "Heat", "Fargo", "Alien", "Aliens", "Babe", "Casino", "Se7en"]


@pytest.mark.skipif(not default_model_dir().is_dir(), reason="MiniLM model is not installed")
def test_progress_follows_the_flag_and_a_second_call_reads_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ids = [f"i{n}" for n in range(len(TITLES))]

    def settings(cache: str) -> SemanticIdConfig:
        return SemanticIdConfig(
            levels=2, codebook_size=4, epochs=2, cache_dir=str(tmp_path / cache)
        )

    quiet = cached_sid_table(ids, TITLES, None, settings("quiet"), show_progress=False)
    assert capsys.readouterr().err == ""
    shown = cached_sid_table(ids, TITLES, None, settings("shown"), show_progress=True)
    err = capsys.readouterr().err
    assert "encode text:" in err and "RQ-VAE fit:" in err and "\r" not in err
    again = cached_sid_table(ids, TITLES, None, settings("shown"), show_progress=True)
    assert capsys.readouterr().err == ""  # cache hit: nothing encoded, nothing fitted
    assert (again.codes == shown.codes).all() and quiet.codes.shape == shown.codes.shape
