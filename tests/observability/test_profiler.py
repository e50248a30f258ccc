"""``--profile`` writes a torch.profiler trace that shows the fused embedding lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.app.train import main
from torchrec_recsys.observability.profiler import maybe_enable_profiling


def test_profiling_off_is_a_no_op(tmp_path: Path) -> None:
    with maybe_enable_profiling(False, tmp_path / "trace", rank=0) as prof:
        assert prof is None
    assert not (tmp_path / "trace").exists()


@pytest.mark.slow
def test_profile_trace_contains_embedding_lookup_ops(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = main([*tiny_overrides(synthetic_paths, tmp_path), "--train.epochs=1", "--profile"])
    (trace,) = (Path(summary["run_dir"]) / "profile").glob("rank0.*.pt.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e.get("name", "") for e in events if e.get("ph") == "X"}
    assert any(n.startswith("fbgemm::split_embedding_codegen_forward") for n in names)
    backward = "fbgemm::split_embedding_backward_codegen_rowwise_adagrad"
    assert any(n.startswith(backward) for n in names)
    assert any("[lookup]_[model.sparse_arch.embedding_bag_collection]" in n for n in names)
    # TensorBoard's PyTorch Profiler tab (torch-tb-profiler, pinned) reads the same file
    tb_profiler = pytest.importorskip("torch_tb_profiler.profiler.data")
    profile = tb_profiler.RunProfileData.parse("rank0", "1", str(trace), str(tmp_path / "cache"))
    profile.process()
    assert len(profile.events) > 100
