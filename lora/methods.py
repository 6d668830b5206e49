"""The method registry: each adaptation method is one `Method`, declared in the lora/ module that implements it.

    lora.apply_method(model, MethodConfig(name="adapter_h", adapter_r=8))   # freeze, add, unfreeze the task head
    lora.methods.get("lora").has_delta_w                                    # True: ΔW = BA over a frozen W0

Adding a method (e.g. DoRA) is one module in lora/ holding `METHODS = (Method(...),)` plus conf/method/<name>.yaml;
no other file tests method names. Its hyperparameters are fields of MethodConfig (the one typed record Hydra
validates), so a method that needs a new one also adds that field there.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from torch import nn

if TYPE_CHECKING:
    from lora.config import MethodConfig


def _nothing_to_check(cfg: "MethodConfig") -> None:
    return None


@dataclass(frozen=True)
class Method:
    name: str
    trains: str  # what it trains, in words (Section 5.1 of the paper)
    fields: tuple[str, ...]  # the MethodConfig fields it reads besides `name`; the others do not change the run
    inject: Callable[[nn.Module, "MethodConfig"], object]  # adds its modules / unfreezes its parameters, in place
    check: Callable[["MethodConfig"], None] = _nothing_to_check  # raises ValueError naming the key and the way out
    trains_all: bool = False  # full fine-tuning: nothing frozen, nothing added
    has_delta_w: bool = False  # a low-rank update BA of frozen weights W0 (base weights saved; ΔW-vs-W analysis)


_PAPER_ORDER = ("partial", "adapters", "layers", "prefix")


@lru_cache(maxsize=1)
def registry() -> dict[str, Method]:
    """Every Method of the modules of this package (their module-level METHODS tuples), by name."""
    import lora

    found: dict[str, Method] = {}
    names = [info.name for info in pkgutil.iter_modules(lora.__path__)]
    first = [n for n in _PAPER_ORDER if n in names]  # the paper's order in listings; any other module after them
    for name in first + sorted(set(names) - set(first)):
        module = importlib.import_module(f"lora.{name}")
        for method in getattr(module, "METHODS", ()):
            if method.name in found:
                raise RuntimeError(f"method {method.name!r} is declared twice (lora.{name} and another module)")
            found[method.name] = method
    return found


def get(name: str) -> Method:
    methods = registry()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(methods)}")
    return methods[name]


def apply_method(model: nn.Module, cfg: "MethodConfig") -> nn.Module:
    """Freeze what the method freezes and add what it adds, in place; returns the model.

    Afterwards exactly the method's parameters (plus the modules named in `cfg.train_also`, the new task head)
    have requires_grad=True.
    """
    from lora.partial import unfreeze_named

    cfg.validate()
    method = get(cfg.name)
    if method.trains_all:
        model.requires_grad_(True)
        return model
    model.requires_grad_(False)
    method.inject(model, cfg)
    unfreeze_named(model, cfg.train_also)
    return model
