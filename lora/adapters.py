"""Bottleneck adapters, each where its paper puts it. An adapter is f(h) = up(relu(down(norm(h)))) added to h.

- Adapter^H (Houlsby et al., 2019): after the attention output projection and after the MLP output projection,
  before each residual add: the projection's output y becomes y + f(y).
- Adapter^D (AdapterDrop, Rücklé et al., 2021): Adapter^H with the adapters of the lowest layers removed. Their main
  setting drops 5 of BERT/RoBERTa base's 12 layers, so by default we drop the same share, floor(5·L/12) of L
  blocks (at least 1): MiniLM-L6 2, RoBERTa base 5, RoBERTa large and GPT-2 M 10, DeBERTa XXL 20 (`default_drop_layers`).
- Adapter^L (Lin et al., 2020): on each block's output H, with a LayerNorm of its own: H + f(LN(H)).
- Adapter^P (Pfeiffer et al., 2021): after the MLP sublayer's Add & Norm, as the LoRA authors' RoBERTa code defines
  the baseline (microsoft/LoRA examples/NLU, RobertaOutput): with x the sublayer input and y the FFN output,
  out = LN(x + y + f(LN(x + y))), the same LN applied twice. Pre-LN blocks (GPT-2, Llama) have no Add & Norm there:
  without it the same formula is H + f(H) on the block output H = x + y.

Parameters per adapter: 2·d·r + r + d (down and up weights and biases); Adapter^L adds its LayerNorm's 2·d. That is
the paper's |Θ| = L_Adpt·(2·d_model·r + r + d_model) + 2·L_LN·d_model, L_Adpt adapters and L_LN new LayerNorms.
Houlsby et al. also train the blocks' own LayerNorms; the paper's Adapter^H counts leave them out, and so do we.
The up-projection starts at zero, so an adapted model starts equal to its base model (Houlsby et al. draw it near
zero instead; exact zero, like LoRA's B = 0, makes the start exact).
"""
from __future__ import annotations

from torch import nn

from lora.layers import in_out_features
from lora.methods import Method
from lora.targets import blocks_of, blocks_path, family_of

KINDS = ("h", "d", "l", "p")
BLOCK_ADAPTER = "output_adapter"  # the attribute of a block that holds its block-output adapter (L, pre-LN P)


class Adapter(nn.Module):
    def __init__(self, d: int, r: int, layer_norm: bool = False, device=None, dtype=None):
        super().__init__()
        self.norm = nn.LayerNorm(d, device=device, dtype=dtype) if layer_norm else nn.Identity()
        self.down = nn.Linear(d, r, device=device, dtype=dtype)
        self.up = nn.Linear(r, d, device=device, dtype=dtype)
        # ReLU for every variant: Lin et al. and Pfeiffer et al. use it; Houlsby et al. leave it open (the LoRA
        # authors' RoBERTa code uses swish for Adapter^H).
        self.act = nn.ReLU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, h):  # h: (..., d) -> f(h), (..., d)
        return self.up(self.act(self.down(self.norm(h))))

    def forward(self, h):
        return h + self.delta(h)


class WithAdapter(nn.Module):
    """A frozen sublayer projection followed by an adapter (Adapter^H, Adapter^D)."""

    def __init__(self, base: nn.Module, adapter: Adapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(self.base(x))


class AfterAddNorm(nn.Module):
    """Adapter^P in a post-LN block: wraps the MLP output sublayer (BERT's BertOutput: dense, dropout, LayerNorm),
    whose forward(hidden_states, input_tensor) is LN(dropout(dense(h)) + x)."""

    def __init__(self, base: nn.Module, adapter: Adapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, hidden_states, input_tensor):  # (batch, T, d_ff), (batch, T, d)
        y = self.base.dropout(self.base.dense(hidden_states))
        normed = self.base.LayerNorm(y + input_tensor)
        return self.base.LayerNorm(y + self.adapter.delta(normed) + input_tensor)


def on_block_output(adapter: Adapter, output):
    """A block's output with `adapter` applied to its hidden states."""
    if isinstance(output, tuple):  # (hidden_states, attentions / cache ...) in some transformers versions
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _block_output_hook(block: nn.Module, args, output):
    return on_block_output(getattr(block, BLOCK_ADAPTER), output)


def default_drop_layers(n_blocks: int) -> int:
    """AdapterDrop's 5 of 12 lowest layers, as the same share of another depth (rounded down), at least one of two
    or more blocks (so that a shallow test model's Adapter^D is not Adapter^H)."""
    return max(1, 5 * n_blocks // 12) if n_blocks > 1 else 0


def inject_adapters(model: nn.Module, kind: str, r: int, drop_layers: int | None = None) -> None:
    """Add adapters of `kind` (h, d, l, p) with bottleneck r. drop_layers (Adapter^D only): how many of the lowest
    blocks keep no adapter; None takes `default_drop_layers`."""
    if kind not in KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {', '.join(KINDS)}")
    if r < 1:
        raise ValueError(f"adapter bottleneck r must be >= 1, got {r}")
    family = family_of(model)
    blocks = blocks_of(model)
    n_blocks = len(blocks)
    if kind != "d":
        drop_layers = 0
    elif drop_layers is None:
        drop_layers = default_drop_layers(n_blocks)
    if not 0 <= drop_layers < n_blocks:
        raise ValueError(f"drop_layers={drop_layers} must be in 0..{n_blocks - 1} (the model has {n_blocks} blocks)")
    root = blocks_path(model)
    w = model.get_input_embeddings().weight
    d = w.shape[1]
    for i in range(drop_layers, n_blocks):
        block = blocks[i]
        if isinstance(block, WithAdapter) or hasattr(block, BLOCK_ADAPTER) or any(
                isinstance(m, (WithAdapter, AfterAddNorm)) for m in block.modules()):
            raise ValueError(f"{root}.{i} already has an adapter; apply an adapter method to a fresh model")
        if kind in ("h", "d"):
            for sub in (family.attn_out, family.mlp_out):
                _wrap(model, f"{root}.{i}.{sub}", lambda m: WithAdapter(m, _new(m, r, False)))
        elif kind == "p" and family.mlp_sublayer:
            _wrap(model, f"{root}.{i}.{family.mlp_sublayer}",
                  lambda m: AfterAddNorm(m, _new(m.dense, r, False)))
        else:  # Adapter^L, and Adapter^P of a pre-LN block: on the block output
            block.add_module(BLOCK_ADAPTER, Adapter(d, r, layer_norm=kind == "l", device=w.device, dtype=w.dtype))
            block.register_forward_hook(_block_output_hook)


def _new(projection: nn.Module, r: int, layer_norm: bool) -> Adapter:
    _, d = in_out_features(projection)
    w = projection.weight
    return Adapter(d, r, layer_norm, device=w.device, dtype=w.dtype)


def _wrap(model: nn.Module, path: str, make) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, make(model.get_submodule(path)))


def check_adapter(cfg) -> None:
    if cfg.adapter_r < 1:
        raise ValueError(f"method.adapter_r must be >= 1 (the bottleneck width), got {cfg.adapter_r}")
    if cfg.drop_layers is not None and cfg.drop_layers < 0:
        raise ValueError(f"method.drop_layers must be >= 0, got {cfg.drop_layers}")


def _method(kind: str, trains: str, *fields: str) -> Method:
    return Method(f"adapter_{kind}", trains, ("adapter_r", *fields, "train_also"),
                  lambda model, cfg: inject_adapters(model, kind, r=cfg.adapter_r, drop_layers=cfg.drop_layers),
                  check_adapter)


METHODS = (
    _method("h", "Houlsby adapters after the attention block and after the MLP (Adapter^H)"),
    _method("l", "one adapter with a LayerNorm of its own on each block's output (Adapter^L, Lin et al.)"),
    _method("p", "one adapter after the MLP's Add & Norm (Adapter^P, Pfeiffer et al.)"),
    _method("d", "Houlsby adapters without those of the lowest `drop_layers` layers (Adapter^D, AdapterDrop)",
            "drop_layers"),
)
