"""Step breakdown: the data path's share of a training step, and our DLRM vs TorchRec's.

Cases, each built once and then measured in interleaved rounds at 1 thread (so load from
elsewhere on the shared box falls on all alike):

    ml100k_dlrm        configs/ml100k_dlrm.toml                (MovieLens-100K, batch 256)
    ml100k_two_tower   configs/ml100k_two_tower.toml           (MovieLens-100K, batch 256)
    criteo_dlrm        configs/criteo_synthetic_dlrm.toml      (26 tables x 100k rows, dim 16,
                       batch 1024) on a synthetic Criteo file written first
    criteo_ours        the same DLRM with exact Adagrad on both sides (sparse fused
                       EXACT_ADAGRAD, dense ``torch.optim.Adagrad``), for the comparison
    criteo_reference   TorchRec's reference setup (facebookresearch/dlrm torchrec_dlrm/
                       dlrm_main.py): ``torchrec.models.dlrm.DLRMTrain(DLRM(...))`` over an
                       ``EmbeddingBagCollection`` of the same tables, ``apply_optimizer_in_
                       backward(Adagrad)``, DistributedModelParallel, a dense Adagrad through
                       ``KeyedOptimizerWrapper``, ``TrainPipelineSparseDist``; same layers, same
                       learning rates, same batches (same ids) as criteo_ours

Per round and case it times

    data       making ``--steps`` batches with the trainer's ``TableSource`` (row gather +
               KJT build: the real data path), ms per batch
    step       ``--steps`` training steps on prebuilt batches (the trainer's engine,
               ``train.pipeline``, plus its per-step loss bookkeeping), ms per step
    real step  ``--steps`` steps on batches made while training, ms per step

and reports per case the median over rounds and

    data share = data / real step

(the definition behind "2.47 ms of a 24.3 ms step"). For the comparison it reports samples/s
of criteo_ours / criteo_reference per round (both on the same prebuilt batches, interleaved)
with the median and the min-max range.

    python benchmarks/step_breakdown.py                 # -> results/step_breakdown_<hw>_<date>
    python benchmarks/step_breakdown.py --quick --out /tmp/step.json   # smoke run

The machine is shared: every window records the 1-minute load average beside its timing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.app import builders  # noqa: E402
from torchrec_recsys.config import ExperimentConfig, load_config, resolve_pipeline  # noqa: E402
from torchrec_recsys.data.criteo import write_synthetic_criteo  # noqa: E402
from torchrec_recsys.data.dataset import RecDataset  # noqa: E402
from torchrec_recsys.data.loader import ShardInfo, TableSource  # noqa: E402
from torchrec_recsys.distributed.env import DistContext, init_distributed  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.training.trainer import make_pipeline  # noqa: E402

try:  # the trainer's per-step loss bookkeeping, where this checkout has it as a class
    from torchrec_recsys.training.trainer import EpochLoss  # type: ignore[attr-defined]
except ImportError:  # an older checkout: the same bookkeeping is inline in its step loop
    EpochLoss = None

CASES = ("ml100k_dlrm", "ml100k_two_tower", "criteo_dlrm", "criteo_ours", "criteo_reference")
EXACT_ADAGRAD = ["--optimizer.sparse=adagrad", "--optimizer.dense=adagrad"]


class _InlineLoss:
    """The per-step loss bookkeeping of a trainer without ``EpochLoss`` (its step loop's ops:
    a float64 running sum and the first non-finite step, both kept on the device)."""

    def __init__(self) -> None:
        self.total = torch.tensor(0.0, dtype=torch.float64)
        self.bad_step = torch.tensor(-1, dtype=torch.int64)
        self.step = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().double()
        self.bad_step = torch.where(
            (self.bad_step < 0) & ~torch.isfinite(loss.detach()), self.step + 1, self.bad_step
        )
        self.step += 1

    def read(self) -> float:
        return float(self.total)


def make_loss_bookkeeping() -> Any:
    """The trainer's loss bookkeeping object (``add(loss)`` per step, ``read()`` at log steps)."""
    if EpochLoss is None:
        return _InlineLoss()
    return EpochLoss(0.0, first_step=1, device=torch.device("cpu"))


class Feed:
    """An endless iterator whose source can be switched between rounds (prebuilt / real), so
    one train pipeline per case serves both kinds of batches."""

    def __init__(self, source: Iterator[Any]) -> None:
        self.source = source

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> Any:
        return next(self.source)


@dataclass
class Case:
    """One model, its optimizer, engine and batches."""

    name: str
    step: Callable[[], torch.Tensor]  # one training step, returns the detached loss
    feed: Feed
    real: Callable[[], Iterator[Any]]  # endless batches made by the data path
    prebuilt: list[Any]
    batch_size: int
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def endless_batches(source: TableSource, batch_size: int) -> Iterator[Any]:
    """Training batches epoch after epoch from the trainer's source of the training table
    (the real data path, one process)."""
    for epoch in itertools.count():
        yield from source.train_batches(batch_size, ShardInfo(), seed=0, epoch=epoch)


def reference_batches(batches: list[Any]) -> list[Any]:
    """``batches`` as ``torchrec.datasets.utils.Batch`` (the reference's batch type), the
    same tensors: dense [B, 13], the KJT of 26 keys, labels [B]."""
    from torchrec.datasets.utils import Batch as TorchRecBatch

    return [
        TorchRecBatch(
            dense_features=b.dense_features, sparse_features=b.sparse_features, labels=b.labels
        )
        for b in batches
    ]


def build_reference(cfg: ExperimentConfig, data: RecDataset, ctx: DistContext) -> Any:
    """TorchRec's DLRM set up as torchrec_dlrm/dlrm_main.py does it: (model, optimizer)."""
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.models.dlrm import DLRM, DLRMTrain
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    ebc = EmbeddingBagCollection(
        tables=data.spec.embedding_bag_configs(), device=torch.device("meta")
    )  # 26 tables x rows x dim, keys cat_0 .. cat_25
    train_model = DLRMTrain(
        DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=len(data.spec.dense),
            dense_arch_layer_sizes=list(cfg.model.dense_arch_layers),
            over_arch_layer_sizes=list(cfg.model.over_arch_layers),
            dense_device=ctx.device,
        )
    )
    apply_optimizer_in_backward(
        torch.optim.Adagrad,
        train_model.model.sparse_arch.parameters(),
        {"lr": cfg.optimizer.sparse_lr},
    )
    model = DistributedModelParallel(module=train_model, device=ctx.device)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())),
        lambda params: torch.optim.Adagrad(params, lr=cfg.optimizer.dense_lr),
    )
    return model, CombinedOptimizer([model.fused_optimizer, dense])


def pipeline_step(
    engine: str, model: torch.nn.Module, optimizer: Any, feed: Feed, ctx: DistContext, ours: bool
) -> Callable[[], torch.Tensor]:
    """One step of ``engine`` over ``feed``; ``ours`` adds the trainer's loss bookkeeping."""
    pipeline = make_pipeline(engine, model, optimizer, ctx.device)
    model.train()
    tally = make_loss_bookkeeping() if ours else None

    def step() -> torch.Tensor:
        if pipeline is not None:
            loss = pipeline.progress(feed)[0]
        else:
            batch = next(feed).to(ctx.device)
            loss, _ = model(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss = loss.detach()
        if tally is not None:
            tally.add(loss)
        return loss

    return step


def build_cases(args: argparse.Namespace, ctx: DistContext, workdir: Path) -> list[Case]:
    """Every case of ``args.cases`` with ``args.steps`` prebuilt batches each."""
    criteo_path = workdir / "criteo_synthetic.tsv"
    names = args.cases.split(",")
    if any(n.startswith("criteo") for n in names):
        write_synthetic_criteo(criteo_path, args.criteo_rows, seed=0)
    overrides = {
        "ml100k_dlrm": ("configs/ml100k_dlrm.toml", []),
        "ml100k_two_tower": ("configs/ml100k_two_tower.toml", []),
        "criteo_dlrm": ("configs/criteo_synthetic_dlrm.toml", []),
        "criteo_ours": ("configs/criteo_synthetic_dlrm.toml", EXACT_ADAGRAD),
        "criteo_reference": ("configs/criteo_synthetic_dlrm.toml", EXACT_ADAGRAD),
    }
    datasets: dict[str, RecDataset] = {}
    cases = []
    for name in names:
        path, extra = overrides[name]
        cfg = load_config(
            REPO / path,
            [
                "--train.progress_bar=false",
                f"--data.criteo.path={criteo_path}",
                *extra,
                *(args.override or []),
            ],
        )
        source = "criteo" if name.startswith("criteo") else "ml100k"
        if source not in datasets:
            datasets[source] = builders.build_data(cfg)
        data = datasets[source]
        batch_size = cfg.train.batch_size
        table_source = TableSource(data.splits["train"], data.spec)  # one per case, kept
        made = endless_batches(table_source, batch_size)
        prebuilt = [next(made) for _ in range(args.steps)]

        def real(source: TableSource = table_source, batch_size: int = batch_size) -> Any:
            return endless_batches(source, batch_size)

        if name == "criteo_reference":
            model, optimizer = build_reference(cfg, data, ctx)
            prebuilt = reference_batches(prebuilt)

            def real_ref(real: Callable[[], Iterator[Any]] = real) -> Iterator[Any]:
                for batch in real():
                    yield from reference_batches([batch])

            real_fn: Callable[[], Iterator[Any]] = real_ref
        else:
            model, optimizer = builders.build_sharded(cfg, data, ctx)
            real_fn = real
        feed = Feed(itertools.cycle(prebuilt))
        engine = resolve_pipeline(cfg)
        step = pipeline_step(engine, model, optimizer, feed, ctx, ours=name != "criteo_reference")
        cases.append(Case(name, step, feed, real_fn, prebuilt, batch_size))
        print(f"built {name} ({engine}, batch {batch_size})", flush=True)
    return cases


def time_window(run: Callable[[], Any], count: int) -> dict[str, float]:
    """ms per call of ``count`` calls of ``run``, with the 1-minute load average."""
    start = time.perf_counter()
    out = None
    for _ in range(count):
        out = run()
    if isinstance(out, torch.Tensor):
        float(out)  # one read-back per window, as the trainer does at log steps
    ms = 1e3 * (time.perf_counter() - start) / count
    return {"ms": ms, "load1": bu.load_average()[0]}


def measure(args: argparse.Namespace, cases: list[Case]) -> None:
    """Interleaved rounds: per case data, prebuilt step, real step (after warm-up steps)."""
    for case in cases:
        for _ in range(args.warmup):
            case.step()
    for round_ in range(args.rounds):
        for case in cases:
            source = case.real()
            data = time_window(lambda s=source: next(s), args.steps)
            case.feed.source = itertools.cycle(case.prebuilt)
            for _ in range(args.warmup):
                case.step()
            step = time_window(case.step, args.steps)
            case.feed.source = case.real()
            for _ in range(args.warmup):
                case.step()
            real = time_window(case.step, args.steps)
            for kind, window in (("data", data), ("step", step), ("real_step", real)):
                case.samples.setdefault(kind, []).append(window)
            print(
                f"round {round_ + 1} {case.name:<17} data {data['ms']:6.2f} ms  step "
                f"{step['ms']:6.2f} ms  real step {real['ms']:6.2f} ms  load {real['load1']}",
                flush=True,
            )


def summarise(cases: list[Case]) -> dict[str, Any]:
    """Per-case medians and data shares; the ours / reference ratio per round."""
    rows = []
    by_name = {c.name: c for c in cases}
    for case in cases:
        med = {k: statistics.median(w["ms"] for w in v) for k, v in case.samples.items()}
        rows.append(
            {
                "case": case.name,
                "batch_size": case.batch_size,
                "data_ms_per_batch": med["data"],
                "step_ms": med["step"],
                "real_step_ms": med["real_step"],
                "data_share_of_real_step": med["data"] / med["real_step"],
                "data_share_of_data_plus_step": med["data"] / (med["data"] + med["step"]),
                "samples_per_second": 1e3 * case.batch_size / med["step"],
                "windows": case.samples,
            }
        )
    out: dict[str, Any] = {"rows": rows}
    if "criteo_ours" in by_name and "criteo_reference" in by_name:
        ours, ref = by_name["criteo_ours"].samples, by_name["criteo_reference"].samples
        ratios = [r["ms"] / o["ms"] for o, r in zip(ours["step"], ref["step"], strict=True)]
        out["vs_reference"] = {
            "ratio_samples_per_second": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "per_round": ratios,
            "definition": "samples/s of criteo_ours / criteo_reference, same prebuilt batches",
        }
    return out


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Step breakdown: data path share and our DLRM vs TorchRec's reference",
        "",
        f"1 process, 1 thread, {args.rounds} interleaved rounds of {args.steps} steps; medians.",
        "Data share = ms to make one batch / ms of a step on batches made while training.",
        "",
        "| case | batch | data ms | step ms (prebuilt) | real step ms | data share | samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['data_ms_per_batch']:.2f} | "
            f"{r['step_ms']:.2f} | {r['real_step_ms']:.2f} | "
            f"{100 * r['data_share_of_real_step']:.1f} % | {r['samples_per_second']:,.0f} |"
        )
    if "vs_reference" in summary:
        v = summary["vs_reference"]
        lines += [
            "",
            f"Our DLRM step (exact Adagrad both sides) vs TorchRec's reference: "
            f"**{v['ratio_samples_per_second']:.3f}x** the samples/s "
            f"[{v['min']:.3f}-{v['max']:.3f}] over {len(v['per_round'])} rounds.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=40, help="steps (batches) per window")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before a window")
    parser.add_argument("--criteo-rows", type=int, default=100_000, help="synthetic rows")
    parser.add_argument("--override", action="append", help="extra --section.key=value")
    parser.add_argument("--quick", action="store_true", help="smoke sizes (tests)")
    parser.add_argument("--out", default=str(REPO / "results"), help="folder or .json path")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        parser.error(f"--cases {unknown[0]!r} is not one of {list(CASES)}")
    if args.quick:
        args.rounds, args.steps, args.warmup, args.criteo_rows = 2, 2, 1, 3000
        args.override = [*(args.override or []), "--data.criteo.hash_rows=1000"]
    torch.set_num_threads(1)
    ctx = init_distributed()
    meta = start_run_meta(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_cases(args, ctx, Path(tmp))
        measure(args, cases)
    summary = summarise(cases)
    payload = {
        "benchmark": "step_breakdown",
        "machine": bu.machine_info(threads=1),
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "criteo_rows": args.criteo_rows,
        **summary,
    }
    table = markdown(summary, args)
    path = write_result_to(args.out, "step_breakdown", payload, meta, markdown=table)
    print(table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
