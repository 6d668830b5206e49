"""The method configuration: one flat, typed record shared by the library and the Hydra schemas.

It is a plain dataclass so that `lora/` stays free of Hydra; `experiments/` registers it in Hydra's ConfigStore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# name -> what it trains (Section 5.1 of the paper)
METHODS: dict[str, str] = {
    "full": "every parameter (Fine-Tune)",
    "ft_top": "the last `top_k` transformer layers only (FT^Top2 with top_k=2)",
    "bitfit": "bias vectors only (BitFit)",
    "adapter_h": "Houlsby adapters after the attention block and after the MLP (Adapter^H)",
    "adapter_l": "one adapter with a LayerNorm of its own on each block's output (Adapter^L, Lin et al.)",
    "adapter_p": "one adapter after the MLP's Add & Norm (Adapter^P, Pfeiffer et al.)",
    "adapter_d": "Houlsby adapters without those of the lowest `drop_layers` layers (Adapter^D, AdapterDrop)",
    "prefix_embed": "l_p prefix + l_i infix trainable input embeddings (PrefixEmbed)",
    "prefix_layer": "trainable activations at l_p + l_i positions after every layer (PrefixLayer)",
    "lora": "low-rank updates BA of the `targets` weight matrices (LoRA)",
    "lora_pe": "LoRA plus PrefixEmbed (LoRA+PE)",
    "lora_pl": "LoRA plus PrefixLayer (LoRA+PL)",
}

LORA_METHODS = ("lora", "lora_pe", "lora_pl")
ADAPTER_METHODS = ("adapter_h", "adapter_l", "adapter_p", "adapter_d")
PREFIX_EMBED_METHODS = ("prefix_embed", "lora_pe")
PREFIX_LAYER_METHODS = ("prefix_layer", "lora_pl")

_LORA_FIELDS = ("r", "alpha", "dropout", "targets")
_PREFIX_FIELDS = ("l_p", "l_i")
# name -> the MethodConfig fields it reads besides `name` (the others do not change what it trains)
FIELDS: dict[str, tuple[str, ...]] = {
    "full": (), "ft_top": ("top_k", "train_also"), "bitfit": ("train_also",),
    "adapter_h": ("adapter_r", "train_also"), "adapter_l": ("adapter_r", "train_also"),
    "adapter_p": ("adapter_r", "train_also"), "adapter_d": ("adapter_r", "drop_layers", "train_also"),
    "prefix_embed": (*_PREFIX_FIELDS, "train_also"), "prefix_layer": (*_PREFIX_FIELDS, "train_also"),
    "lora": (*_LORA_FIELDS, "train_also"), "lora_pe": (*_LORA_FIELDS, *_PREFIX_FIELDS, "train_also"),
    "lora_pl": (*_LORA_FIELDS, *_PREFIX_FIELDS, "train_also"),
}


@dataclass
class MethodConfig:
    name: str = "lora"
    # LoRA: rank r for every matrix named in `targets` (roles: q, k, v, o, mlp_in, mlp_out, mlp_gate, or mlp for all
    # MLP matrices); scaling = alpha / r as in the paper.
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])
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
        if self.name not in METHODS:
            known = ", ".join(METHODS)
            raise ValueError(f"unknown method {self.name!r}; known methods: {known}")
        if self.name in LORA_METHODS:
            if self.r < 1:
                raise ValueError(f"method.r must be >= 1 for {self.name} (the rank of each update BA), got {self.r}; "
                                 "the paper uses 1 to 64, e.g. method.r=8")
            if self.alpha <= 0:
                raise ValueError(f"method.alpha must be > 0 (the update BA is scaled by alpha / r), got {self.alpha}; "
                                 "e.g. method.alpha=8, or alpha = r for a scale of 1")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"method.dropout must be in [0, 1), got {self.dropout}")
            if not self.targets:
                raise ValueError("method.targets is empty; name at least one role, e.g. method.targets=[q,v]")
        if self.name in ADAPTER_METHODS and self.adapter_r < 1:
            raise ValueError(f"method.adapter_r must be >= 1, got {self.adapter_r}")
        if self.drop_layers is not None and self.drop_layers < 0:
            raise ValueError(f"method.drop_layers must be >= 0, got {self.drop_layers}")
        if self.name in PREFIX_EMBED_METHODS + PREFIX_LAYER_METHODS:
            if self.l_p < 0 or self.l_i < 0:
                raise ValueError(f"method.l_p and method.l_i must be >= 0 (prefix and infix lengths, in tokens), got "
                                 f"l_p={self.l_p}, l_i={self.l_i}; e.g. method.l_p=8 method.l_i=8")
            if self.l_p + self.l_i == 0:
                raise ValueError("prefix tuning needs method.l_p + method.l_i > 0 (no trainable tokens otherwise); "
                                 "e.g. method.l_p=8")
        if self.name == "ft_top" and self.top_k < 1:
            raise ValueError(f"method.top_k must be >= 1, got {self.top_k}")
        return self
