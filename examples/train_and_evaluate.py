"""Train a model from Python and read its test metrics.

    python -m torchrec_recsys synth --out data/synthetic        # tiny data, once
    python examples/train_and_evaluate.py --config configs/tiny_synthetic.toml \
        --set train.epochs=2 --set model.name=two_tower

``--set section.key=value`` works like the command line's ``--section.key=value``.
"""

from __future__ import annotations

import argparse
import sys

import torchrec_recsys as trs


def main(argv: list[str] | None = None) -> trs.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny_synthetic.toml", help="TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--output-dir", default="runs/examples", help="where runs are written")
    args = parser.parse_args(argv)

    cfg = trs.load_config(args.config, [f"train.output_dir={args.output_dir}", *args.set])
    result = trs.train(cfg)  # trains, tests the selected epoch, writes the run folder

    for epoch in result.epochs:
        print(f"epoch {epoch['epoch'] + 1}: train loss {epoch['train_loss']:.4f}")
    for name, value in sorted(result.metrics.items()):
        print(f"test {name} = {value:.4f}")
    print(f"{result.config.model.name} run: {result.run_dir}")

    run = trs.load_run(result.run_dir)  # later, e.g. in another process
    assert run.metrics == result.metrics
    return result


if __name__ == "__main__":
    try:
        main()
    except trs.UserError as e:
        sys.exit(f"error: {e}")
