"""``python -m torchrec_recsys <subcommand>`` and the ``torchrec-recsys`` console script."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable

from torchrec_recsys.errors import UserError


def _train(argv: list[str]) -> None:
    from torchrec_recsys.train.main import main

    main(argv)


SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "train": (_train, "train the configured model (DLRM by default) with sharded embeddings"),
}


def usage() -> str:
    lines = ["usage: python -m torchrec_recsys <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run '<subcommand> --help' for its options."]
    return "\n".join(lines)


def quiet_library_noise() -> None:
    """Hide the libraries' deprecation chatter and planner warnings from users' terminals."""
    for module in ("fbgemm_gpu", "torchrec", "torch.distributed", "torch.fx"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("torchrec", "torch.fx", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; a :class:`UserError` prints one line and exits with 2."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_library_noise()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {name!r}; expected one of {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        SUBCOMMANDS[name][0](rest)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
