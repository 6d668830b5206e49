"""The method configuration: one flat, typed record shared by the library and the Hydra schemas.

Which fields a method reads and how it checks them: its `Method` (lora/methods.py).

It is a plain dataclass so that `lora/` stays free of Hydra; `experiments/` registers it in Hydra's ConfigStore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

@dataclass
class MethodConfig:
    name: str = "lora"
    # LoRA: rank r for every matrix named in `targets` (roles: q, k, v, o, mlp_in, mlp_out, mlp_gate, or mlp for all
    # MLP matrices); scaling = alpha / r as in the paper.
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])
    scaling: str = "standard"  # standard: alpha / r (the paper); rs: alpha / sqrt(r) (rsLoRA, Kalajdzievski 2023)
    lr_ratio_b: float = 1.0  # LoRA+ (Hayou et al. 2024): B trains at lr_ratio_b times the learning rate of A
    # Adapters: bottleneck width and, for Adapter^D, how many of the lowest layers lose their adapters (None:
    # AdapterDrop's 5 of 12, floor(5·L/12) of L blocks; lora.adapters.default_drop_layers).
    adapter_r: int = 8
    drop_layers: Optional[int] = None
    # Prefix tuning: prefix length l_p and infix length l_i.
    l_p: int = 8
    l_i: int = 8
    # FT^Top-k
    top_k: int = 2
    # Modules trained by every method besides its own parameters, by name component: the task head, the same for
    # every family (BERT's pooler dense + tanh, DeBERTa's ContextPooler, RoBERTa's classifier dense + out_proj,
    # a decoder's score), as the paper trains the whole new head.
    train_also: list[str] = field(default_factory=lambda: ["classifier", "score", "pooler"])

    def validate(self) -> "MethodConfig":
        from lora.methods import get

        get(self.name).check(self)
        return self
