"""Quality report of semantic IDs: reconstruction, codebook use, collisions, genre coherence.

Numbers (all from the quantizer's L codes, *before* any collision level):

* reconstruction cosine: mean cosine(x, x_hat) between embeddings and their reconstruction.
* utilisation per level: share of the K codes used by at least one item.
* perplexity per level: exp(entropy of the code distribution); K when usage is uniform.
* collision rate: ``1 - distinct code tuples / N``.
* coherence: among item pairs with the same level-1 code (and the same level-1+2 prefix), the
  share that have at least one genre in common, next to the same share for random pairs. SIDs
  that group similar items give shares well above the random baseline.

:func:`write_report` writes ``<prefix>.json`` and a bar plot ``<prefix>.png`` of code usage.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchrec_recsys.errors import DataError
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.semantic_ids.base import check_codes
from torchrec_recsys.semantic_ids.collisions import collision_rate

GenreInput = Sequence[str] | Sequence[Sequence[str]]


@dataclass
class Coherence:
    """Genre agreement of items that share SID prefixes vs. random item pairs."""

    level1_share: float
    """Share of same-level-1-code pairs sharing >= 1 genre (NaN when no such pair)."""
    level1_pairs: int
    """Pairs measured for ``level1_share``."""
    prefix2_share: float | None
    """Same for pairs sharing the level-1+2 prefix (None with a single level)."""
    prefix2_pairs: int
    """Pairs measured for ``prefix2_share``."""
    random_share: float
    """Share of random distinct-item pairs sharing >= 1 genre: the baseline."""
    random_pairs: int
    """Pairs measured for ``random_share``."""
    sampled: bool
    """True when some pair set was too large and was sampled (seeded) rather than enumerated."""


@dataclass
class SIDReport:
    """All report numbers; ``to_dict`` gives the JSON form."""

    method: str
    """Which quantizer made the codes (``rqvae``, ``rq_kmeans``, ...)."""
    num_items: int
    codebook_sizes: list[int]
    """K per level."""
    utilisation: list[float]
    """Per level: used codes / K."""
    perplexity: list[float]
    """Per level: exp(entropy) of code usage."""
    collision_rate: float
    """``1 - distinct tuples / N`` before the collision level."""
    reconstruction_cosine: float | None = None
    """Mean cosine(x, x_hat); None when no reconstruction was given."""
    coherence: Coherence | None = None
    """Genre coherence; None when no genres were given."""
    fallback_texts: int | None = None
    """Items whose text was missing and encoded as ``"item <id>"`` (from the encoder)."""
    code_counts: list[list[int]] = field(default_factory=list, repr=False)
    """Per level: items per code [K] (drives the plot)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form additions (timings, config)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes None)."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class GenreSets:
    """Each item's genre ids in CSR form (never a dense items x genres matrix).

    ``indices[indptr[i]:indptr[i + 1]]`` are item i's sorted genre ids in ``[0, num_genres)``.
    """

    indptr: np.ndarray  # [N + 1] int64
    indices: np.ndarray  # [nnz] int64
    num_genres: int

    def keys(self) -> np.ndarray:
        """Sorted ``item * num_genres + genre`` of every (item, genre). [nnz] int64"""
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))  # [nnz]
        return rows * self.num_genres + self.indices


def genre_sets(genres: GenreInput, separator: str = "|") -> GenreSets:
    """Genre ids per item from ``"A|B"`` strings or lists of names (empty -> none)."""
    vocab: dict[str, int] = {}
    rows: list[list[int]] = []
    for entry in genres:
        names = entry.split(separator) if isinstance(entry, str) else list(entry)
        ids = {vocab.setdefault(n.strip(), len(vocab)) for n in names if n and n.strip()}
        rows.append(sorted(ids))
    lengths = np.array([len(r) for r in rows], dtype=np.int64)  # [N]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # [N + 1]
    indices = np.fromiter((g for r in rows for g in r), dtype=np.int64, count=int(indptr[-1]))
    return GenreSets(indptr, indices, max(len(vocab), 1))


def _group_pairs(
    keys: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pairs (i < j) of items with equal key [N]: all of them, or ``max_pairs`` sampled.

    Returns left [P], right [P] item rows and whether the set was sampled.
    """
    order = np.argsort(keys, kind="stable")  # [N]
    _, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    pair_counts = counts * (counts - 1) // 2  # [G]
    total = int(pair_counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), False
    if total <= max_pairs:
        left, right = [], []
        for start, count in zip(starts[counts > 1], counts[counts > 1], strict=True):
            members = order[start : start + count]  # [c]
            a, b = np.triu_indices(count, k=1)
            left.append(members[a])
            right.append(members[b])
        return np.concatenate(left), np.concatenate(right), False
    # Sample: a group with probability proportional to its pair count, then two members.
    group = rng.choice(len(counts), size=max_pairs, p=pair_counts / total)  # [P]
    first = rng.integers(0, counts[group])  # [P]
    second = rng.integers(0, counts[group] - 1)  # [P]
    second = second + (second >= first)  # distinct from first
    return order[starts[group] + first], order[starts[group] + second], True


def _random_pairs(
    n: int, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """All distinct pairs of n items, or ``max_pairs`` sampled uniformly (i != j)."""
    if n * (n - 1) // 2 <= max_pairs:
        a, b = np.triu_indices(n, k=1)
        return a, b, False
    left = rng.integers(0, n, size=max_pairs)  # [P]
    right = rng.integers(0, n - 1, size=max_pairs)  # [P]
    return left, right + (right >= left), True


def _share(genres: GenreSets, left: np.ndarray, right: np.ndarray) -> float:
    """Share of pairs whose genre sets overlap (NaN for no pairs); memory ~ pairs x genres."""
    if left.size == 0:
        return float("nan")
    lengths = genres.indptr[left + 1] - genres.indptr[left]  # [P]
    pair = np.repeat(np.arange(left.size), lengths)  # [E] pair of each left-side genre
    first = np.repeat(genres.indptr[left] - (np.cumsum(lengths) - lengths), lengths)  # [E]
    left_genre = genres.indices[first + np.arange(pair.size)]  # [E]
    wanted = right[pair] * genres.num_genres + left_genre  # [E] (right item, left's genre)
    keys = genres.keys()  # [nnz] sorted
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))  # [E]
    found = keys[at] == wanted if keys.size else np.zeros(pair.size, dtype=bool)
    overlap = np.zeros(left.size, dtype=bool)  # [P]
    overlap[pair[found]] = True
    return float(overlap.mean())


def coherence(
    codes: np.ndarray,
    genres: GenreInput,
    *,
    separator: str = "|",
    max_pairs: int = 200_000,
    seed: int = 0,
) -> Coherence:
    """Genre coherence of codes [N, L] (see module docstring)."""
    codes = np.asarray(codes, dtype=np.int64)  # [N, L]
    if len(genres) != codes.shape[0]:
        raise DataError(f"got {len(genres)} genre entries for {codes.shape[0]} items")
    matrix = genre_sets(genres, separator)  # CSR, no [N, G] matrix
    rng = np.random.default_rng(seed)
    l1_left, l1_right, s1 = _group_pairs(codes[:, 0], max_pairs, rng)
    p2_share, p2_count, s2 = None, 0, False
    if codes.shape[1] >= 2:
        _, prefix = np.unique(codes[:, :2], axis=0, return_inverse=True)
        p2_left, p2_right, s2 = _group_pairs(prefix.reshape(-1), max_pairs, rng)
        p2_share, p2_count = _share(matrix, p2_left, p2_right), int(p2_left.size)
    r_left, r_right, s3 = _random_pairs(codes.shape[0], max_pairs, rng)
    return Coherence(
        level1_share=_share(matrix, l1_left, l1_right),
        level1_pairs=int(l1_left.size),
        prefix2_share=p2_share,
        prefix2_pairs=p2_count,
        random_share=_share(matrix, r_left, r_right),
        random_pairs=int(r_left.size),
        sampled=s1 or s2 or s3,
    )


def build_report(
    codes: np.ndarray,
    codebook_size: int | Sequence[int],
    *,
    method: str = "",
    embeddings: np.ndarray | None = None,
    reconstruction: np.ndarray | None = None,
    genres: GenreInput | None = None,
    fallback_texts: int | None = None,
    max_pairs: int = 200_000,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> SIDReport:
    """Compute the report for quantizer codes [N, L] (no collision level).

    Args:
        codes: [N, L] codes.
        codebook_size: K, or one K per level.
        method: name shown in the report.
        embeddings, reconstruction: [N, D] each; both given -> reconstruction cosine.
        genres: per item ``"A|B"`` or a list of genre names -> coherence.
        fallback_texts: count from the encoder (:attr:`.encoder.EncodeResult.num_fallback`).
        max_pairs: above this many pairs, a pair set is sampled (seeded by ``seed``).
        extra: free-form numbers to carry along.
    """
    sizes = (
        [int(codebook_size)] * np.asarray(codes).shape[1]
        if isinstance(codebook_size, int | np.integer)
        else [int(k) for k in codebook_size]
    )
    array = check_codes(codes, sizes)  # [N, L]
    counts = [np.bincount(array[:, lv], minlength=k) for lv, k in enumerate(sizes)]  # L x [K]
    utilisation = [float((c > 0).mean()) for c in counts]
    perplexity = []
    for c in counts:
        p = c[c > 0] / c.sum()
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())) if c.sum() else 0.0)
    cosine = None
    if embeddings is not None and reconstruction is not None:
        x = np.asarray(embeddings, np.float64)  # [N, D]
        y = np.asarray(reconstruction, np.float64)  # [N, D]
        if x.shape != y.shape or x.shape[0] != array.shape[0]:
            raise DataError(
                f"embeddings {x.shape} and reconstruction {y.shape} must both be "
                f"[{array.shape[0]}, D]"
            )
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)  # [N]
        cosine = float(((x * y).sum(1) / np.maximum(norms, 1e-12)).mean())
    return SIDReport(
        method=method,
        num_items=int(array.shape[0]),
        codebook_sizes=sizes,
        utilisation=utilisation,
        perplexity=perplexity,
        collision_rate=collision_rate(array),
        reconstruction_cosine=cosine,
        coherence=(
            coherence(array, genres, max_pairs=max_pairs, seed=seed) if genres is not None else None
        ),
        fallback_texts=fallback_texts,
        code_counts=[c.tolist() for c in counts],
        extra=dict(extra or {}),
    )


def code_usage(codes: np.ndarray, codebook_sizes: Sequence[int]) -> dict[str, Any]:
    """What a generator decodes over: per-level utilisation and perplexity of quantizer codes
    [N, L] (no collision level) and their collision rate, as JSON-able numbers.

    Raises:
        DataError: a code outside its level's ``codebook_sizes`` entry.
    """
    report = build_report(codes, list(codebook_sizes))
    return {
        "codebook_sizes": report.codebook_sizes,
        "utilisation": report.utilisation,
        "perplexity": report.perplexity,
        "collision_rate": report.collision_rate,
    }


def plot_code_usage(report: SIDReport, path: str | Path) -> Path:
    """Bar plot, one panel per level, of items per code sorted by frequency; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = len(report.code_counts)
    fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), squeeze=False)
    for level, (ax, counts) in enumerate(zip(axes[0], report.code_counts, strict=True)):
        ordered = sorted(counts, reverse=True)
        ax.bar(range(len(ordered)), ordered, width=1.0)
        ax.set_title(
            f"level {level + 1}: used {report.utilisation[level]:.0%}, "
            f"ppl {report.perplexity[level]:.1f}",
            fontsize=9,
        )
        ax.set_xlabel("code (by frequency)")
        ax.set_ylabel("items")
    fig.suptitle(f"{report.method or 'SID'} code usage, {report.num_items} items", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(
    report: SIDReport, folder: str | Path, prefix: str = "sid_report"
) -> dict[str, Path]:
    """Write ``<folder>/<prefix>.json`` and ``<folder>/<prefix>.png``; returns both paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{prefix}.json"
    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2))
    return {"json": json_path, "png": plot_code_usage(report, out / f"{prefix}.png")}
