"""Entry points: ``export-bundle``, ``registry``, ``serve`` and ``drift``.

export-bundle --retriever RUN --ranker RUN --out BUNDLE [--quantize int8] [--kind ivf]
registry --root DIR add BUNDLE | promote VERSION | rollback | list | canary | shadow
serve --registry DIR [--host 127.0.0.1 --port 8080 --processes N]
drift --url http://127.0.0.1:8080 [--plot drift.png]
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import torch.distributed as dist

from torchrec_recsys.app import parsers
from torchrec_recsys.app.retrieval_commands import check_two_stage_runs
from torchrec_recsys.app.trained import TrainedModel, load_trained, read_run_config
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.errors import UserError
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.retrieval.faiss_index import IndexSpec
from torchrec_recsys.serving.bundle import METRIC, Architecture, write_bundle
from torchrec_recsys.serving.drift import check_report, format_report, plot_report
from torchrec_recsys.serving.http_guard import DEFAULT_MAX_BODY_BYTES
from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.service import (
    ServiceConfig,
    check_serve_options,
    check_service_settings,
    serve,
)


def architecture(trained: TrainedModel, quantization: str) -> Architecture:
    """How the serving side rebuilds ``trained``'s model (from its run config)."""
    m = trained.cfg.model
    return Architecture(
        kind=m.name,
        layers=tuple(m.tower_layers),
        dense_arch_layers=tuple(m.dense_arch_layers),
        over_arch_layers=tuple(m.over_arch_layers),
        quantization=quantization,
    )


def export_bundle_main(argv: list[str]) -> None:
    parser = parsers.export_bundle_parser()
    args = parser.parse_args(argv)
    check_writable_folder(args.out, "--out")
    check_two_stage_runs(args)
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        retriever = load_trained(args.retriever, ctx)
        ranker_cfg = read_run_config(Path(args.ranker))
        if ranker_cfg.model.objective != "rating":
            raise UserError(
                f"--ranker {args.ranker!r} was trained with model.objective = "
                f"{ranker_cfg.model.objective!r}; export-bundle serves rating-objective rankers"
            )
        same_data = all(
            getattr(ranker_cfg, s) == getattr(retriever.cfg, s)
            for s in ("data", "features", "semantic_ids")
        )  # then the encoded dataset is identical: build it once
        ranker = load_trained(args.ranker, ctx, data=retriever.data if same_data else None)
        if not ctx.is_main:
            return
        spec = IndexSpec(
            kind=args.kind,
            metric=METRIC,
            ivf_nlist=args.nlist,
            ivf_nprobe=args.nprobe,
            hnsw_m=args.hnsw_m,
            hnsw_ef_search=args.ef_search,
        )
        source = {
            role: {
                "run_dir": str(Path(run).resolve()),
                "checkpoint": str(t.checkpoint),
                "global_step": t.state.global_step,
            }
            for role, run, t in (
                ("retriever", args.retriever, retriever),
                ("ranker", args.ranker, ranker),
            )
        }
        out = write_bundle(
            args.out,
            retriever,
            architecture(retriever, args.quantize),
            ranker,
            architecture(ranker, args.quantize),
            spec,
            source=source,
            overwrite=args.overwrite,
        )
        print(
            f"wrote bundle {out} ({len(retriever.data.items)} items, {args.kind} index, "
            f"{args.quantize})"
        )
    finally:
        if owns_group:
            shutdown_distributed()


def _print_state(registry: Registry) -> None:
    state = registry.state()
    canary = (
        f"{state.canary['version']} ({state.canary['share']:.0%} of users)"
        if state.canary
        else "none"
    )
    print(
        f"live: {state.live or 'none'}  canary: {canary}  shadow: {state.shadow or 'none'}  "
        f"rollback to: {state.history[-1] if state.history else 'none'}  "
        f"(generation {state.generation})"
    )


def registry_main(argv: list[str]) -> None:
    parser = parsers.registry_parser()
    args = parser.parse_args(argv)
    registry = Registry(args.root)
    registry.check_root(must_exist=args.action != "add")
    if args.action == "add":
        name = registry.add(args.bundle, args.name)
        print(f"added {args.bundle} as version {name}")
    elif args.action == "promote":
        registry.promote(args.version)
        print(f"promoted {args.version}")
    elif args.action == "rollback":
        state = registry.rollback()
        print(f"rolled back to {state.live}")
    elif args.action in ("canary", "shadow"):
        if args.off == (args.version is not None):
            raise UserError(f"registry {args.action}: give a VERSION or --off (one of them)")
        if args.action == "canary":
            registry.set_canary(None if args.off else args.version, args.share)
        else:
            registry.set_shadow(None if args.off else args.version)
    if args.action == "list":
        rows = registry.describe()
        if not rows:
            print(f"registry {args.root} holds no versions")
        for row in rows:
            print(
                f"{row['version']:<8} {row['items']:>7} items  {row['index']:<5} "
                f"{row['quantization']:<5} {', '.join(row['roles'])}"
            )
    _print_state(registry)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_main(argv: list[str]) -> None:
    parser = parsers.serve_parser()
    args = parser.parse_args(argv)
    if args.max_body_bytes is None:
        args.max_body_bytes = DEFAULT_MAX_BODY_BYTES
    # every flag is checked before anything starts (nothing loaded, bound or written)
    if args.host not in LOOPBACK and not args.allow_remote:
        raise UserError(
            f"--host {args.host!r} is not a loopback address; pass --allow-remote to expose "
            "the service beyond this machine"
        )
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731 - setting -> flag name
    check_serve_options(args.host, args.port, args.torch_threads, args.processes, flag)
    settings = {
        "max_k": args.max_k,
        "candidates": args.candidates,
        "max_concurrency": args.max_concurrency,
        "workers": args.workers,
        "poll_seconds": args.poll_seconds,
        "drift_window_seconds": args.drift_window_seconds,
        "psi_threshold": args.psi_threshold,
        "drift_min_requests": args.drift_min_requests,
        "max_body_bytes": args.max_body_bytes,
    }
    check_service_settings(settings, flag)
    registry = Path(args.registry)
    if not registry.is_dir():
        what = "is not a folder" if registry.exists() else "does not exist"
        raise UserError(f"--registry {args.registry!r} {what}; expected a registry folder")
    log_dir = Path(args.log_dir) if args.log_dir else registry / "logs"
    check_writable_folder(log_dir, "--log-dir")
    config = ServiceConfig(
        registry=registry,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        allowed_hosts=tuple(args.allowed_host),
        **settings,
    )
    serve(config, args.host, args.port, args.torch_threads, args.processes)


MAX_REPORT_BYTES = 16 << 20
"""The largest drift answer ``drift`` reads."""


def check_writable_folder(path: str | Path, flag: str) -> None:
    """Refuse a folder path that cannot be created or written: an existing file, a path
    below a file, or a folder without write permission.

    Raises:
        UserError: one line naming ``flag``, the path and the blocking file or folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a file; expected a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"{flag} {str(path)!r} lies below the file {str(existing)!r}; expected a folder path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {str(path)!r}: folder {str(existing)!r} is not writable")


def drift_main(argv: list[str]) -> None:
    parser = parsers.drift_parser()
    args = parser.parse_args(argv)
    url = f"{args.url.rstrip('/')}/drift"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read(MAX_REPORT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace").strip().splitlines()[:1]
        raise UserError(f"{url} answered {exc.code}: {' '.join(detail)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot reach the service at {args.url!r} ({exc})") from None
    if len(body) > MAX_REPORT_BYTES:
        raise UserError(f"the answer of {url} exceeds {MAX_REPORT_BYTES} bytes; not a report")
    try:
        report = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise UserError(f"the answer of {url} is not JSON; expected a drift report") from None
    check_report(report, f"the drift report from {url}")
    print(f"version {report.get('version') or 'unknown'}")
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
    if args.plot:
        print(f"wrote {plot_report(report, args.plot)}")
    if report["flagged"]:
        print(f"drift flagged: {', '.join(report['flagged'])}", file=sys.stderr)
