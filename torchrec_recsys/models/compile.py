"""``torch.compile`` for the dense parts of a model; embedding tables stay eager (sharded).

DLRM: bottom MLP (``dense_arch``), interaction (``inter_arch``) and top MLP (``over_arch``);
two-tower: each tower's MLP. Compiling whole modules would reach into the sharded EBC, which
TorchRec's pipeline replaces at run time, so only these leaf blocks are compiled, in place
(``nn.Module.compile``): parameter names and checkpoints are the same with and without it.
"""

from __future__ import annotations

from torch import nn

DENSE_BLOCKS = ("dense_arch", "inter_arch", "over_arch", "mlp")
"""Child module names compiled when found anywhere in the model."""


def compile_dense(model: nn.Module, mode: str | None = None) -> list[str]:
    """Compile every dense block of ``model`` in place (its ``state_dict`` keys unchanged).

    Returns the qualified names of the compiled blocks (empty if the model has none).
    """
    compiled = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in DENSE_BLOCKS:
            module.compile(mode=mode, dynamic=False)
            compiled.append(name)
    return compiled
