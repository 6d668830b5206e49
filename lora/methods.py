"""One entry point that turns a pretrained model into one adapted by any method of the paper."""
from __future__ import annotations

from torch import nn

from lora import adapters, layers, partial, prefix
from lora.config import ADAPTER_METHODS, LORA_METHODS, PREFIX_EMBED_METHODS, PREFIX_LAYER_METHODS, MethodConfig


def apply_method(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    """Freeze what the method freezes and add what it adds, in place; returns the model.

    Afterwards exactly the method's parameters (plus the modules named in `cfg.train_also`, the new task head)
    have requires_grad=True.
    """
    cfg.validate()
    if cfg.name == "full":
        model.requires_grad_(True)
        return model
    model.requires_grad_(False)
    if cfg.name == "ft_top":
        partial.unfreeze_top_layers(model, cfg.top_k)
    elif cfg.name == "bitfit":
        partial.unfreeze_biases(model)
    if cfg.name in LORA_METHODS:
        layers.inject_lora(model, cfg.targets, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout)
    if cfg.name in ADAPTER_METHODS:
        adapters.inject_adapters(model, cfg.name.removeprefix("adapter_"), r=cfg.adapter_r,
                                 drop_layers=cfg.drop_layers)
    if cfg.name in PREFIX_EMBED_METHODS:
        prefix.inject_prefix_embed(model, l_p=cfg.l_p, l_i=cfg.l_i)
    if cfg.name in PREFIX_LAYER_METHODS:
        prefix.inject_prefix_layer(model, l_p=cfg.l_p, l_i=cfg.l_i)
    partial.unfreeze_named(model, cfg.train_also)
    return model
