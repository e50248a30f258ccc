"""Training step time of the generative retriever per encoder input, interleaved A/B/A/B.

One step = forward (encoder + teacher-forced decoder), cross-entropy, backward, Adam step, at
MovieLens-100K's shape: ``--items`` catalogue items spelled by ``--sizes`` SID levels (the
quantizer levels + a collision level; random unique codes: the step's cost does not depend
on the code values), full histories of ``--history`` items, batch ``--batch``, the shipped
config's width (64, 2 layers, 4 heads, feed-forward 256) and dropout (``--dropout``: 0, as
chosen on validation; at 0.1 dropout's random masks are a large share of a CPU step), the
tables unsharded on CPU.
Variants are ``input:history`` pairs, e.g. ``summed:20`` (one encoder position per item)
and ``tokens:20`` (TIGER: every token its own position). Each round times every variant
once (``--steps`` steps after ``--warmup``), so a change of load hits all alike; the result
gives per-variant median ms/step over rounds and the ratio to the first variant.

    flock /tmp/cpu.lock timeout 600 python benchmarks/generative_step_time.py

writes ``results/generative_step_time_<hardware>_<date>.json`` (+ ``.md``) with provenance.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from torchrec_recsys.data.features import USER, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.sequences import SequenceFeatures, SequenceSplit, make_sequence_batch
from torchrec_recsys.models.generative import GenerativeRetriever
from torchrec_recsys.models.tasks import GenerativeTask
from torchrec_recsys.observability.provenance import start_run_meta, write_result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="summed:20,tokens:20,tokens:10", help="input:history")
    p.add_argument("--items", type=int, default=1682, help="catalogue items")
    p.add_argument("--sizes", default="64,64,64,4", help="codes per SID level")
    p.add_argument("--batch", type=int, default=256, help="examples per step")
    p.add_argument("--dropout", type=float, default=0.0, help="T5 dropout (the shipped config's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--results", default="results", help="folder of the result files")
    return p.parse_args(argv)


def unique_codes(num_items: int, sizes: list[int], seed: int = 0) -> torch.Tensor:
    """[I, L'] distinct random code tuples."""
    g = torch.Generator().manual_seed(seed)
    total = 1
    for k in sizes:
        total *= k
    flat = torch.randperm(total, generator=g)[:num_items]
    codes = []
    for k in reversed(sizes):
        codes.append(flat % k)
        flat = flat // k
    return torch.stack(codes[::-1], dim=1)


def build(input_mode: str, history: int, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(task, optimizer, batch) of one variant."""
    sizes = [int(k) for k in args.sizes.split(",")]
    torch.manual_seed(0)
    offsets = torch.tensor([1 + sum(sizes[:t]) for t in range(len(sizes))])
    tokens = unique_codes(args.items, sizes) + offsets[None, :]  # [I, L']
    item = SparseFeature("history_sid", "t_sid_token", 1 + sum(sizes), 64, "none", USER)
    user = SparseFeature("user_token", "t_user_token", 2001, 64, "none", USER)
    features = SequenceFeatures(item, tokens, user, torch.randint(1, 2001, (args.batch,)))
    model = GenerativeRetriever(
        item,
        user,
        tokens,
        sizes,
        history,
        2,
        4,
        256,
        args.dropout,
        20,
        "cpu",
        "cpu",
        input_mode=input_mode,
    )
    task = GenerativeTask(model).train()
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, args.items, (args.batch, history), generator=g)
    split = SequenceSplit(
        JaggedColumn.from_lists(rows.tolist()),
        torch.randint(0, args.items, (args.batch,), generator=g),
        torch.arange(args.batch),
    )
    batch = make_sequence_batch(split, features, torch.arange(args.batch), torch.ones(args.batch))
    return task, torch.optim.Adam(task.parameters(), lr=1e-3), batch


def step(task, optimizer, batch) -> None:  # type: ignore[no-untyped-def]
    loss, _ = task(batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = start_run_meta(threads=args.threads)
    variants = [v.split(":") for v in args.variants.split(",")]
    built = {f"{m}:{h}": build(m, int(h), args) for m, h in variants}
    for task, optimizer, batch in built.values():
        for _ in range(args.warmup):
            step(task, optimizer, batch)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, (task, optimizer, batch) in built.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(task, optimizer, batch)
            times[name].append((time.perf_counter() - start) * 1e3 / args.steps)
    first = statistics.median(times[next(iter(built))])
    rows = []
    for name, values in times.items():
        mode, history = name.split(":")
        levels = len(args.sizes.split(","))
        positions = 1 + int(history) * (levels if mode == "tokens" else 1)
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "encoder_positions": positions,
                "ms_per_step_median": median,
                "ms_per_step_rounds": values,
                "ratio_to_first": median / first,
            }
        )
        print(rows[-1], flush=True)
    lines = ["| input:history | encoder positions | ms/step (median) | ratio |"]
    lines.append("|---|---|---|---|")
    lines += [
        f"| {r['variant']} | {r['encoder_positions']} | {r['ms_per_step_median']:.0f} | "
        f"{r['ratio_to_first']:.2f} |"
        for r in rows
    ]
    payload = {"config": vars(args), "results": rows}
    path = write_result(args.results, "generative_step_time", payload, meta, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
