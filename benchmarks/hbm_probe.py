"""GPU memory-bandwidth probes, the ceiling the EBC benchmark's GPU rows are read against.

Prints and writes JSON (GB/s, CUDA-event timed, mean of 20 after 3 warm-ups):

* ``d2d_copy_gbps``: a 2 GiB device-to-device copy (bytes read + written);
* ``gather_<rows>_gbps``: ``index_select`` of 65,536 x 20 random rows of a [rows, 64] fp32 table
  (bytes read + written), the lookup half of an embedding step;
* ``gather_scatter_add_<rows>_gbps``: the same gather, then ``index_add_`` of those rows back
  into the table (5 row-sized transfers per id), the read-modify-write of an SGD update.

    python benchmarks/hbm_probe.py     # -> results/hbm_probe_<gpu>_<date>.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial

import torch

from torchrec_recsys.observability.provenance import start_run_meta, write_result_to


def seconds_per_call(fn: Callable[[], object], repeats: int = 20) -> float:
    """Mean seconds of ``fn`` on the current CUDA stream (3 untimed warm-up calls)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats / 1e3


def probe(rows_list: list[int], ids_per_step: int, dim: int) -> dict[str, float]:
    """The probes above, in GB/s."""
    device = torch.device("cuda")
    out: dict[str, float] = {}
    src = torch.empty(2 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    out["d2d_copy_gbps"] = 2 * src.numel() / seconds_per_call(partial(dst.copy_, src)) / 1e9
    del src, dst
    for rows in rows_list:
        table = torch.randn(rows, dim, device=device)  # [R, D]
        ids = torch.randint(0, rows, (ids_per_step,), device=device)  # [N]
        gathered = torch.empty(ids_per_step, dim, device=device)  # [N, D]
        row_bytes = dim * 4
        sec = seconds_per_call(partial(_gather, table, ids, gathered))
        out[f"gather_{rows}_gbps"] = 2 * ids_per_step * row_bytes / sec / 1e9
        sec = seconds_per_call(partial(_gather_scatter_add, table, ids, gathered))
        out[f"gather_scatter_add_{rows}_gbps"] = 5 * ids_per_step * row_bytes / sec / 1e9
    return out


def _gather(table: torch.Tensor, ids: torch.Tensor, out: torch.Tensor) -> None:
    torch.index_select(table, 0, ids, out=out)


def _gather_scatter_add(table: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> None:
    torch.index_select(table, 0, ids, out=rows)
    table.index_add_(0, ids, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10**6, 10**7])
    parser.add_argument("--ids", type=int, default=65536 * 20, help="ids per step")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            "hbm_probe: no CUDA device is visible (torch.cuda.is_available() is False)"
        )
    meta = start_run_meta()
    result = {"device": torch.cuda.get_device_name(0), **probe(args.rows, args.ids, args.dim)}
    print(json.dumps(result, indent=1))
    print(f"wrote {write_result_to(args.out, 'hbm_probe', result, meta)}")


if __name__ == "__main__":
    main()
