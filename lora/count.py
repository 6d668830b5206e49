"""Parameter counting that works on the meta device, so paper-size models cost no memory."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ParamCount:
    trainable: int  # every parameter with requires_grad, the task head included
    total: int  # every parameter of the adapted model (base + added)
    method: int  # trainable parameters outside the modules named in `exclude` (the paper's "# Trainable Parameters")


def count_parameters(model: nn.Module, exclude: list[str] | tuple[str, ...] = ()) -> ParamCount:
    """Counts each parameter tensor once (tied weights are shared tensors)."""
    seen: set[int] = set()
    trainable = total = method = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
            if not any(has_component(name, e) for e in exclude):
                method += n
    return ParamCount(trainable=trainable, total=total, method=method)


def has_component(name: str, suffix: str) -> bool:
    """True when `suffix` names a module on the path `name` (e.g. 'classifier' in 'classifier.out_proj.weight')."""
    parts = name.split(".")
    want = suffix.split(".")
    return any(parts[i:i + len(want)] == want for i in range(len(parts) - len(want) + 1))
