"""Bottleneck adapters applied to a sublayer's output before its residual: y + up(relu(down(y))).

Parameters per adapter: 2·d·r + r + d (down and up weights and biases); Adapter^L adds its LayerNorm's 2·d. That is
the paper's |Θ| = L_Adpt·(2·d_model·r + r + d_model) + 2·L_LN·d_model, L_Adpt adapters and L_LN new LayerNorms.
Houlsby et al. also train the blocks' own LayerNorms; the paper's Adapter^H counts leave them out, and so do we.
The up-projection starts at zero, so an adapted model starts equal to its base model (Houlsby et al. draw it near
zero instead; exact zero, like LoRA's B = 0, makes the start exact).
"""
from __future__ import annotations

from torch import nn

from lora.layers import in_out_features
from lora.targets import blocks_of, blocks_path, family_of


class Adapter(nn.Module):
    def __init__(self, d: int, r: int, layer_norm: bool = False, device=None, dtype=None):
        super().__init__()
        # Lin et al. normalise the adapter's input; Houlsby and Pfeiffer adapters have no LayerNorm of their own.
        self.norm = nn.LayerNorm(d, device=device, dtype=dtype) if layer_norm else nn.Identity()
        self.down = nn.Linear(d, r, device=device, dtype=dtype)
        self.up = nn.Linear(r, d, device=device, dtype=dtype)
        # ReLU for every variant: Lin et al. and Pfeiffer et al. use it; Houlsby et al. leave the nonlinearity open.
        self.act = nn.ReLU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y):  # y: (..., d)
        return y + self.up(self.act(self.down(self.norm(y))))


class WithAdapter(nn.Module):
    """A frozen sublayer projection followed by an adapter."""

    def __init__(self, base: nn.Module, adapter: Adapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(self.base(x))


# kind -> (adapt the attention output, adapt the MLP output, adapter LayerNorm)
# Adapter^L departs in placement from Lin et al., whose adapter sits on the residual stream at the end of each block:
# here it reads the MLP output before the residual add, like the others (same parameters, LN(y) as Lin et al.).
PLACEMENT = {"h": (True, True, False), "d": (True, True, False), "p": (False, True, False), "l": (False, True, True)}


def inject_adapters(model: nn.Module, kind: str, r: int, drop_layers: int = 0) -> None:
    if kind not in PLACEMENT:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {', '.join(PLACEMENT)}")
    if r < 1:
        raise ValueError(f"adapter bottleneck r must be >= 1, got {r}")
    family = family_of(model)
    n_blocks = len(blocks_of(model))
    if not 0 <= drop_layers < n_blocks:
        raise ValueError(f"drop_layers={drop_layers} must be in 0..{n_blocks - 1} (the model has {n_blocks} blocks)")
    after_attn, after_mlp, layer_norm = PLACEMENT[kind]
    sublayers = [p for p, on in ((family.attn_out, after_attn), (family.mlp_out, after_mlp)) if on]
    root = blocks_path(model)
    for i in range(drop_layers, n_blocks):  # AdapterDrop: the lowest `drop_layers` blocks keep no adapter
        for sub in sublayers:
            path = f"{root}.{i}.{sub}"
            module = model.get_submodule(path)
            if isinstance(module, WithAdapter):
                raise ValueError(f"{path} already has an adapter; apply an adapter method to a fresh model")
            _, d = in_out_features(module)
            w = module.weight
            adapter = Adapter(d, r, layer_norm, device=w.device, dtype=w.dtype)
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, WithAdapter(module, adapter))
