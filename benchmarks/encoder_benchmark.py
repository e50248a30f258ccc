"""Text encoder at its limit: token-count batching vs sorting by characters, the share of the
machine's matmul rate reached, candidate faster backends, and a whole ``sid build``.

On ``--texts`` item texts drawn (seed 0) from the configured catalogue (default: 5,000
Book-Crossing titles), in interleaved rounds at each of ``--threads``:

    chars    the texts sorted by character length, cut into batches of 64 and padded by the
             tokenizer (how the encoder batched before)
    tokens   ``TextEncoder`` as shipped: tokenised once, sorted by token count, bucketed
             (at most 64 texts and 8,192 padded positions per batch)

Each row reports texts/s, the token positions computed against the real ones, the largest
difference between the two embeddings, and the share of the matmul rate reached: useful
FLOPs (real tokens only: projections, feed-forward and attention of every layer) per second
over the GFLOP/s of one fp32 ``torch.mm`` of the encoder's own shape at the same threads.

Candidate faster backends (``--backend-texts`` texts, 1 thread): per-channel and per-tensor
dynamic int8 of every ``Linear`` and bf16 weights, each with its speed against fp32 and the
recall@10 of each text's nearest neighbours against fp32's; a backend is worth adding only at
recall >= 0.95.

``--sid-build`` also times ``python -m torchrec_recsys --threads 2 sid build`` over the whole
catalogue of ``--config`` in a fresh process, with a cold embedding cache and the fit stopped
by ``--fit-seconds``.

    python benchmarks/encoder_benchmark.py --threads 1,2 --repeats 3 --sid-build

Writes ``results/encoder_<hardware>_<date>.json`` (+ ``.md``) with provenance.
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec_recsys.app.builders import build_raw_data  # noqa: E402
from torchrec_recsys.config import load_config  # noqa: E402
from torchrec_recsys.data.dataset import item_texts  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.semantic_ids.encoder import (  # noqa: E402
    TextEncoder,
    mean_pool,
    prepare_texts,
)

CHAR_BATCH = 64
"""Texts per batch of the character-sorted baseline (the encoder's batch size)."""


def sample_texts(config: str, columns: list[str], count: int) -> list[str]:
    """``count`` prepared texts of the catalogue's ``columns``, drawn without replacement."""
    cfg = load_config(config, [])
    raw = build_raw_data(cfg)
    texts = item_texts(raw.items, columns)
    rows = np.random.default_rng(0).choice(len(texts), min(count, len(texts)), replace=False)
    prepared, _ = prepare_texts([texts[i] for i in rows])
    return prepared


def char_sorted_embed(encoder: TextEncoder, texts: list[str]) -> tuple[np.ndarray, int]:
    """The baseline: batches of 64 texts in character-length order -> ([N, D], positions)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)  # [N, D]
    positions = 0
    with torch.inference_mode():
        for start in range(0, len(texts), CHAR_BATCH):
            rows = order[start : start + CHAR_BATCH]
            batch = encoder._tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=encoder.max_length,
                return_tensors="pt",
            )
            positions += batch["input_ids"].numel()
            hidden = encoder._model(**batch).last_hidden_state  # [B, T, D]
            out[rows] = mean_pool(hidden, batch["attention_mask"]).float().numpy()
    return out, positions


def encoder_gflop(encoder: TextEncoder, lengths: list[int]) -> float:
    """Useful GFLOP of one pass over texts of these token counts (no padding): per layer and
    token, the Q/K/V/output projections (4 D^2 multiply-adds), the feed-forward (2 D F) and
    attention over the text's own T tokens (2 T D)."""
    cfg = encoder._model.config
    d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = np.asarray(lengths, dtype=np.float64)
    per_layer = 2.0 * (tokens * (4 * d * d + 2 * d * f) + tokens * tokens * 2 * d)
    return float(layers * per_layer.sum() / 1e9)


def matmul_gflops(encoder: TextEncoder, repeats: int = 5) -> float:
    """fp32 GFLOP/s of [4096, D] x [D, F] (the feed-forward's shape) at the current threads."""
    cfg = encoder._model.config
    a = torch.randn(4096, cfg.hidden_size)
    b = torch.randn(cfg.hidden_size, cfg.intermediate_size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def neighbour_recall(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (cosine, self excluded) that ``other`` keeps."""

    def top(emb: np.ndarray) -> np.ndarray:
        scores = emb @ emb.T  # [N, N]
        np.fill_diagonal(scores, -np.inf)
        return np.argpartition(-scores, k, axis=1)[:, :k]  # [N, k]

    a, b = top(reference), top(other)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


def compare_batching(
    encoder: TextEncoder, texts: list[str], threads: list[int], repeats: int
) -> list[dict[str, Any]]:
    """chars vs tokens rows per thread count, rounds interleaved."""
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        rate = matmul_gflops(encoder)
        seconds: dict[str, list[float]] = {"chars": [], "tokens": []}
        for round_ in range(repeats):
            start = time.perf_counter()
            by_chars, char_positions = char_sorted_embed(encoder, texts)
            seconds["chars"].append(time.perf_counter() - start)
            start = time.perf_counter()
            by_tokens = encoder.encode(texts).embeddings
            seconds["tokens"].append(time.perf_counter() - start)
            print(
                f"threads {count} round {round_}: chars {seconds['chars'][-1]:.2f} s, "
                f"tokens {seconds['tokens'][-1]:.2f} s",
                flush=True,
            )
        stats = encoder.last_stats
        assert stats is not None
        gflop = encoder_gflop(encoder, [len(ids) for ids in encoder.tokenize(texts)])
        diff = float(np.abs(by_chars - by_tokens).max())
        for name, positions in (("chars", char_positions), ("tokens", stats.padded_tokens)):
            median = statistics.median(seconds[name])
            rows.append(
                {
                    "threads": count,
                    "batching": name,
                    "texts": len(texts),
                    "median_s": round(median, 3),
                    "runs_s": [round(s, 3) for s in seconds[name]],
                    "texts_per_s": round(len(texts) / median, 1),
                    "real_tokens": stats.real_tokens,
                    "positions": positions,
                    "useful_gflop": round(gflop, 2),
                    "matmul_gflops": round(rate, 1),
                    "share_of_matmul_rate": round(gflop / median / rate, 3),
                    "speedup_vs_chars": round(statistics.median(seconds["chars"]) / median, 3),
                    "max_abs_diff_vs_chars": diff,
                }
            )
    return rows


def compare_backends(encoder: TextEncoder, texts: list[str]) -> list[dict[str, Any]]:
    """fp32 vs int8 (per channel, per tensor) and bf16 at 1 thread on ``texts``."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    torch.set_num_threads(1)
    fp32 = encoder._model
    candidates = {
        "int8 per channel": lambda: quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear: per_channel_dynamic_qconfig}
        ),
        "int8 per tensor": lambda: quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear: default_dynamic_qconfig}
        ),
        "bf16": lambda: copy.deepcopy(fp32).to(torch.bfloat16),
    }
    start = time.perf_counter()
    reference = encoder.encode(texts).embeddings
    base = time.perf_counter() - start
    rows = [{"backend": "fp32", "seconds": round(base, 3), "speedup": 1.0, "recall@10": 1.0}]
    for name, make in candidates.items():
        encoder._model = make()
        try:
            start = time.perf_counter()
            embeddings = encoder.encode(texts).embeddings
            seconds = time.perf_counter() - start
        finally:
            encoder._model = fp32
        recall = neighbour_recall(reference, embeddings)
        rows.append(
            {
                "backend": name,
                "seconds": round(seconds, 3),
                "speedup": round(base / seconds, 3),
                "recall@10": round(recall, 4),
            }
        )
        print(f"backend {name}: {seconds:.2f} s vs fp32 {base:.2f} s, recall@10 {recall:.3f}")
    return rows


def time_sid_build(config: str, fit_seconds: float) -> dict[str, Any]:
    """Wall time of a ``sid build`` process over the whole catalogue, cold embedding cache."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "torchrec_recsys",
            "--threads",
            "2",
            "sid",
            "build",
            "--config",
            config,
            "--out",
            f"{scratch}/table",
            f"--max-seconds={fit_seconds}",
            f"--semantic_ids.cache_dir={scratch}/cache",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: sid build failed: {done.stderr.strip().splitlines()[-1]}")
    found = re.search(r"semantic IDs for (\d+) items in ([\d.]+) s", done.stdout)
    assert found is not None, done.stdout
    shown = " ".join(command[2:]).replace(scratch, "<scratch>")
    return {
        "command": f"python -m {shown}",
        "items": int(found.group(1)),
        "build_s": float(found.group(2)),
        "process_wall_s": round(wall, 1),
        "fit_budget_s": fit_seconds,
        "stdout_tail": [
            line.replace(scratch, "<scratch>") for line in done.stdout.strip().splitlines()[-6:]
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Text encoder: batching, matmul share, backends, sid build",
        "",
        f"{result['texts']} texts ({', '.join(result['columns'])}) of `{result['config']}`.",
        "",
        "| threads | batching | median s | texts/s | positions / real tokens | share of "
        "matmul rate | speed-up vs chars | max diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["batching"]:
        lines.append(
            f"| {r['threads']} | {r['batching']} | {r['median_s']:.2f} | {r['texts_per_s']:.0f}"
            f" | {r['positions']:,} / {r['real_tokens']:,} | {r['share_of_matmul_rate']:.0%} "
            f"({r['matmul_gflops']:.0f} GFLOP/s) | {r['speedup_vs_chars']:.2f}x | "
            f"{r['max_abs_diff_vs_chars']:.1e} |"
        )
    if result["backends"]:
        lines += ["", f"Backends, {result['backend_texts']} texts, 1 thread:", ""]
        lines += ["| backend | seconds | speed-up | recall@10 vs fp32 |", "|---|---|---|---|"]
        for r in result["backends"]:
            lines.append(
                f"| {r['backend']} | {r['seconds']:.2f} | {r['speedup']:.2f}x | "
                f"{r['recall@10']:.3f} |"
            )
    build = result.get("sid_build")
    if build:
        lines += [
            "",
            f"`{build['command']}`: {build['items']:,} items, build {build['build_s']:.0f} s, "
            f"process {build['process_wall_s']:.0f} s (fit budget {build['fit_budget_s']:.0f} s).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/bookx_two_tower.toml")
    parser.add_argument("--columns", default="title", help="comma-separated item text columns")
    parser.add_argument("--texts", type=int, default=5000, help="texts of the batching rows")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--backend-texts", type=int, default=1000, help="0: skip backends")
    parser.add_argument("--sid-build", action="store_true", help="also time a whole sid build")
    parser.add_argument("--fit-seconds", type=float, default=60.0, help="sid build fit budget")
    parser.add_argument("--out", default=str(REPO / "results"), help="results folder or .json")
    args = parser.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads {args.threads!r} is not a comma-separated list of integers")
    if min(threads) < 1 or args.texts < 2 or args.repeats < 1:
        parser.error("--threads, --texts and --repeats must be positive (--texts at least 2)")
    meta = start_run_meta(threads=max(threads))
    columns = args.columns.split(",")
    texts = sample_texts(args.config, columns, args.texts)
    encoder = TextEncoder(show_progress=False).load()
    result: dict[str, Any] = {
        "config": args.config,
        "columns": columns,
        "texts": len(texts),
        "batching": compare_batching(encoder, texts, threads, args.repeats),
        "backend_texts": min(args.backend_texts, len(texts)),
        "backends": (
            compare_backends(encoder, texts[: args.backend_texts]) if args.backend_texts else []
        ),
    }
    if args.sid_build:
        result["sid_build"] = time_sid_build(args.config, args.fit_seconds)
    table = markdown(result)
    path = write_result_to(args.out, "encoder", result, meta, markdown=table)
    print(table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
