"""Provenance of a measured result: the one ``run_meta`` block every result file carries.

Benchmarks and experiment drivers call :func:`start_run_meta` before measuring and
:func:`finish_run_meta` after, then store the block under the ``run_meta`` key of their JSON
(or use :func:`write_result`, which does both halves' bookkeeping and names the files
``<topic>_<hardware>_<yyyymmdd>.{json,md}``)::

    meta = start_run_meta(threads=1)
    ...measure...
    write_result("results", "ebc_throughput", payload, meta, markdown=table)

The block holds: git commit and dirty flag, package versions, argv, threads, hardware, load
average at start and end, and the UTC start/end time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from torchrec_recsys.files import atomic_write_text

PACKAGES = (
    "torch",
    "torchrec",
    "fbgemm-gpu-cpu",
    "fbgemm-gpu",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "torchx",
    "numpy",
    "lightgbm",
    "transformers",
    "fastapi",
)
"""Distributions whose versions are recorded (those not installed are left out)."""

RUN_META_KEYS = (
    "commit",
    "dirty",
    "versions",
    "argv",
    "threads",
    "hardware",
    "load_start",
    "load_end",
    "started",
    "finished",
)
"""Keys of every finished ``run_meta`` block (null where an imported file did not record one)."""


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"commit": <sha or None>, "dirty": <bool or None>}`` of the checkout running this."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES`."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware() -> dict[str, Any]:
    """CPU model, cores available to this process, memory, and the GPU if torch sees one."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(ValueError, OSError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    return info


def hardware_tag(info: dict[str, Any] | None = None) -> str:
    """Short name of the hardware for file names: ``h200``, ``h100``, or ``cpu<cores>``."""
    info = info or hardware()
    gpu = str(info.get("gpu", ""))
    for name in ("H200", "H100", "A100", "L4", "T4"):
        if name in gpu:
            return name.lower()
    if gpu:
        return "gpu"
    return f"cpu{info.get('cores', 0)}"


def start_run_meta(threads: int | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance block at the start of a measurement.

    Args:
        threads: the intra-op thread count used (default: ``torch.get_num_threads()`` when
            torch is imported, else ``$OMP_NUM_THREADS``).
        argv: the command line (default: ``sys.argv``).
    """
    if threads is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    elif threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    return {
        **git_state(),
        "versions": package_versions(),
        "argv": list(sys.argv if argv is None else argv),
        "threads": threads,
        "hardware": hardware(),
        "load_start": _load(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def finish_run_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the load average and time at the end added (a new dict)."""
    return {
        **meta,
        "load_end": _load(),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def result_stem(topic: str, meta: dict[str, Any]) -> str:
    """``<topic>_<hardware>_<yyyymmdd>`` for a result measured under ``meta``."""
    day = str(meta.get("started", datetime.now(UTC).isoformat()))[:10].replace("-", "")
    return f"{topic}_{hardware_tag(meta.get('hardware'))}_{day}"


def write_result(
    folder: str | Path,
    topic: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    markdown: str | None = None,
) -> Path:
    """Write ``<folder>/<topic>_<hardware>_<date>.json`` (and ``.md`` if given); return the JSON.

    The JSON is ``{"run_meta": <finished meta>, **payload}``; the Markdown report gets a
    provenance footer. Both are written atomically.
    """
    meta = finish_run_meta(meta) if "finished" not in meta else meta
    path = Path(folder) / f"{result_stem(topic, meta)}.json"
    return _write_files(path, payload, meta, markdown)


def _write_files(
    path: Path, payload: dict[str, Any], meta: dict[str, Any], markdown: str | None
) -> Path:
    """Write ``path`` = ``{"run_meta": meta, **payload}`` and, if given, the Markdown report
    with its provenance footer beside it (``.md``), both atomically; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"run_meta": meta, **payload}, indent=2) + "\n")
    if markdown is not None:
        text = markdown.rstrip() + "\n\n" + meta_footer(meta)
        atomic_write_text(path.with_suffix(".md"), text)
    return path


def meta_footer(meta: dict[str, Any]) -> str:
    """A short Markdown provenance paragraph for a report."""
    commit = meta.get("commit") or "unknown"
    dirty = " (uncommitted changes)" if meta.get("dirty") else ""
    hw = meta.get("hardware", {})
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    return (
        f"Measured {meta.get('started', '?')} - {meta.get('finished', '?')} on commit "
        f"`{str(commit)[:12]}`{dirty}; {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores"
        f"{', ' + str(hw['gpu']) if 'gpu' in hw else ''}; threads {meta.get('threads')}; "
        f"load {meta.get('load_start')} -> {meta.get('load_end')}; {versions}.\n"
        f"Command: `{shlex.join(meta.get('argv', []))}`\n"
    )


def write_result_to(
    out: str | Path,
    topic: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    markdown: str | None = None,
) -> Path:
    """Write a result where a script's ``--out`` says; return the JSON path.

    ``out`` is a folder (the default ``results``): :func:`write_result` names the files
    ``<topic>_<hardware>_<date>.{json,md}`` there. ``out`` ending in ``.json`` is an explicit
    file (tests, scratch runs): it is written as given, ``{"run_meta": ..., **payload}``, with
    the Markdown (if any) beside it as ``.md``.
    """
    out = Path(out)
    if out.suffix != ".json":
        return write_result(out, topic, payload, meta, markdown=markdown)
    meta = finish_run_meta(meta) if "finished" not in meta else meta
    return _write_files(out, payload, meta, markdown)


def latest_result(folder: str | Path, topic: str) -> Path | None:
    """The newest ``<folder>/<topic>_<hardware>_<yyyymmdd>.json`` (by date, then name)."""
    pattern = re.compile(rf"^{re.escape(topic)}_[a-z0-9]+_(\d{{8}})\.json$")
    found = [
        (m.group(1), p.name, p)
        for p in Path(folder).glob(f"{topic}_*.json")
        if (m := pattern.match(p.name))
    ]
    return max(found)[2] if found else None
