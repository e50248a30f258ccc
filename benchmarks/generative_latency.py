"""Latency of generative retrieval (constrained beam search) vs two-tower + FAISS, per user.

For the first ``--users`` test users of trained runs (``train`` summaries' run directories):

* generative: encoder + constrained beam search at each ``--beams`` width, the user's
  training items excluded inside the beam (what evaluation and ``recommend`` do), with the
  decoder's keys/values cached (the default search) and, with ``--uncached``, also
  recomputing the decoder over every prefix (the reference search);
* two-tower: query tower + exact FAISS (flat, cosine) top-10 over the catalogue, asking for
  10 + (user's training items) neighbours and dropping those, the same exclusion.

Per-user latency is one user per call (p50/p95 over users, after ``--warmup`` calls);
throughput is users/s with ``--batch`` users per call. Threads: ``--threads`` (2 = the 2
cores these machines have). The machine is shared: the load average is recorded.

    python benchmarks/generative_latency.py --generative runs/readme/generative_s0 \
        --two-tower runs/readme/two_tower_s0 --uncached

writes ``results/generative_latency_<hardware>_<date>.json`` (+ ``.md``) with provenance.
Latency does not depend on how well the runs are trained (the beam does the same work), so
short runs serve.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np
import torch

from torchrec_recsys.app.trained import load_trained
from torchrec_recsys.data.sequences import make_sequence_batch
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.metrics.retrieval import exclusion_mask
from torchrec_recsys.observability.provenance import start_run_meta, write_result
from torchrec_recsys.observability.timing import percentile
from torchrec_recsys.retrieval.faiss_index import IndexSpec, build_index
from torchrec_recsys.retrieval.predict import item_embeddings, predict


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generative", required=True, help="generative run directory")
    p.add_argument("--two-tower", required=True, help="two-tower run directory")
    p.add_argument("--beams", default="10,20,50", help="beam widths")
    p.add_argument("--users", type=int, default=200, help="test users timed one at a time")
    p.add_argument("--batch", type=int, default=64, help="users per call for throughput")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    p.add_argument("--uncached", action="store_true", help="also time the uncached search")
    p.add_argument("--results", default="results", help="folder of the result files")
    return p.parse_args(argv)


def per_call_ms(fn: Callable[[int], object], n: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(i % n)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def row(name: str, per_user: list[float], batched_s: float, users: int) -> dict[str, object]:
    return {
        "method": name,
        "p50_ms": percentile(per_user, 50),
        "p95_ms": percentile(per_user, 95),
        "users_per_s_batched": users / batched_s,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    meta = start_run_meta(threads=args.threads)
    ctx = init_distributed()
    try:
        gen = load_trained(args.generative, ctx)
        tt = load_trained(args.two_tower, ctx)
    finally:
        shutdown_distributed()
    assert gen.task is not None and gen.sequences is not None and tt.task is not None
    data = gen.data
    test = gen.sequences.source.splits["test"]
    n = min(args.users, len(test))
    features = gen.sequences.source.features

    def gen_call(rows: torch.Tensor, beam: int, cache: bool) -> None:
        batch = make_sequence_batch(test, features, rows, torch.ones(len(rows)))
        mask = exclusion_mask(
            data.users.train_items, batch.user_rows, batch.targets, len(data.items)
        )
        gen.task.model.generate(batch.sparse_features, mask, beam, use_cache=cache)

    results = []
    for beam in [int(b) for b in args.beams.split(",")]:
        for cache in (True, False) if args.uncached else (True,):
            per_user = per_call_ms(
                lambda i, w=beam, c=cache: gen_call(torch.tensor([i]), w, c), n, args.warmup
            )
            start = time.perf_counter()
            for b in range(0, n, args.batch):
                gen_call(torch.arange(b, min(b + args.batch, n)), beam, cache)
            name = f"generative beam {beam}{'' if cache else ' (uncached)'}"
            results.append(row(name, per_user, time.perf_counter() - start, n))
            print(results[-1], flush=True)

    items = item_embeddings(tt.task, tt.data).numpy().astype(np.float32)  # [I, D]
    index = build_index(items, IndexSpec(kind="flat", metric="cosine"))
    tt_test = tt.data.splits["test"]
    train_items = tt.data.users.train_items

    def tt_call(rows: torch.Tensor) -> None:
        table = tt.data.pair_table(tt_test, rows, tt_test.item_rows[rows])  # test-time features
        queries = predict(tt.task, table, tt.data, "query")
        q = queries.numpy().astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        extra = int(train_items.lengths[tt_test.user_rows[rows]].max())
        _, found = index.search(q, min(10 + extra, index.ntotal))
        for r, user in enumerate(tt_test.user_rows[rows].tolist()):
            seen = set(train_items.select(torch.tensor([user])).values.tolist())
            _ = [i for i in found[r] if i not in seen][:10]

    per_user = per_call_ms(lambda i: tt_call(torch.tensor([i])), n, args.warmup)
    start = time.perf_counter()
    for b in range(0, n, args.batch):
        tt_call(torch.arange(b, min(b + args.batch, n)))
    results.append(row("two-tower + FAISS flat", per_user, time.perf_counter() - start, n))
    print(results[-1], flush=True)
    model = gen.task.model
    report = {
        "config": vars(args),
        "users": n,
        "catalogue": len(data.items),
        "generative_input": model.input_mode,
        "sid_levels": model.trie.sizes,
        "results": results,
    }
    lines = ["| method | p50 ms/user | p95 ms/user | users/s batched |", "|---|---|---|---|"]
    lines += [
        f"| {r['method']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
        f"{r['users_per_s_batched']:.0f} |"
        for r in results
    ]
    path = write_result(args.results, "generative_latency", report, meta, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
