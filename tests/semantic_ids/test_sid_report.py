"""Quality report: coherence, utilisation, perplexity and cosine on sets with known answers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.report import build_report, coherence, write_report

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def genre_aligned(n: int = 60, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Level-1 code = the item's genre; level 2 random: level-1 groups share a genre by design."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, len(GENRES), size=n)  # [N]
    codes = np.stack([genre, rng.integers(0, 4, size=n)], axis=1)  # [N, 2]
    return codes, [GENRES[g] for g in genre]


def brute_force_random_share(genres: list[str]) -> float:
    pairs = list(itertools.combinations(range(len(genres)), 2))
    sets = [set(g.split("|")) - {""} for g in genres]
    shared = [bool(sets[i] & sets[j]) for i, j in pairs]
    return sum(shared) / len(pairs)


def test_coherence_is_high_when_codes_follow_genres() -> None:
    codes, genres = genre_aligned()
    result = coherence(codes, genres)
    assert result.level1_share == 1.0 and result.prefix2_share == 1.0
    assert result.random_share == pytest.approx(brute_force_random_share(genres))
    assert result.random_share < 0.5
    assert result.level1_pairs == sum(math.comb(int(c), 2) for c in np.bincount(codes[:, 0]))
    assert not result.sampled


def test_coherence_of_random_codes_is_near_the_baseline() -> None:
    codes, genres = genre_aligned(n=300)
    shuffled = np.random.default_rng(5).permutation(codes[:, 0])
    result = coherence(np.stack([shuffled, codes[:, 1]], axis=1), genres)
    assert abs(result.level1_share - result.random_share) < 0.1


def test_sampled_pairs_keep_the_answer() -> None:
    codes, genres = genre_aligned(n=300)
    result = coherence(codes, genres, max_pairs=500, seed=1)
    assert result.sampled and result.level1_pairs == 500 and result.random_pairs == 500
    assert result.level1_share == 1.0
    assert abs(result.random_share - brute_force_random_share(genres)) < 0.08


def test_utilisation_perplexity_collisions_and_cosine() -> None:
    codes = np.stack([np.repeat([0, 2], 10), np.tile(np.arange(4), 5)], axis=1)  # [20, 2]
    x = np.random.default_rng(0).normal(size=(20, 5))
    report = build_report(codes, 4, embeddings=x, reconstruction=2 * x, method="test")
    assert report.utilisation == [0.5, 1.0]
    assert report.perplexity == pytest.approx([2.0, 4.0])
    distinct = len({tuple(r) for r in codes})
    assert report.collision_rate == pytest.approx(1 - distinct / 20)
    assert report.reconstruction_cosine == pytest.approx(1.0)
    assert build_report(codes, 4, embeddings=x, reconstruction=-x).reconstruction_cosine == (
        pytest.approx(-1.0)
    )
    assert report.code_counts[0] == [10, 0, 10, 0] and report.coherence is None


def test_write_report_makes_json_and_png(tmp_path: Path) -> None:
    codes, genres = genre_aligned()
    report = build_report(codes, [6, 4], genres=genres, fallback_texts=2, method="demo")
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["coherence"]["level1_share"] == 1.0 and data["fallback_texts"] == 2
    assert data["codebook_sizes"] == [6, 4]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mismatched_inputs_are_errors() -> None:
    codes, genres = genre_aligned()
    with pytest.raises(DataError, match="59 genre entries for 60 items"):
        coherence(codes, genres[:-1])
    with pytest.raises(DataError, match="expected values in"):
        build_report(codes, 3)


def test_coherence_with_multi_genre_and_empty_items_matches_brute_force() -> None:
    """The CSR overlap (no items x genres matrix) agrees with set intersection."""
    rng = np.random.default_rng(3)
    genres = [
        "|".join(rng.choice(GENRES, size=int(rng.integers(0, 4)), replace=False)) for _ in range(40)
    ]
    codes = np.stack([rng.integers(0, 3, size=40), rng.integers(0, 3, size=40)], axis=1)
    result = coherence(codes, genres)
    assert result.random_share == pytest.approx(brute_force_random_share(genres))


def test_code_usage_counts_used_codes_and_shared_tuples() -> None:
    from torchrec_recsys.semantic_ids.report import code_usage

    codes = np.array([[0, 1], [0, 2], [1, 1], [0, 1]])  # [4, 2]; tuple (0, 1) twice
    usage = code_usage(codes, [2, 4])
    assert usage["utilisation"] == [1.0, 0.5]  # level 2 uses codes 1 and 2 of 4
    assert usage["collision_rate"] == pytest.approx(0.25)  # 3 distinct tuples of 4
    assert usage["codebook_sizes"] == [2, 4]
    with pytest.raises(DataError):
        code_usage(codes, [2, 2])  # code 2 does not fit a level of 2
