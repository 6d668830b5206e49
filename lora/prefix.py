"""PrefixEmbed and PrefixLayer (Section 5.1 of the paper), without editing any transformers code.

Both insert l_p "prefix" positions before the input and l_i "infix" positions right after each row's last real token
(right-padded batches). A forward pre-hook on the whole model turns `input_ids` into `inputs_embeds` with those
positions inserted and extends `attention_mask`, `token_type_ids` and `labels` (-100 at inserted positions).
- PrefixEmbed: the inserted embeddings are trainable, d·(l_p + l_i) parameters.
- PrefixLayer: after every block, the hidden states at the inserted positions are replaced by trainable activations,
  L·d·(l_p + l_i) parameters; the inserted input embeddings are fixed zeros. (Li & Liang's prefix-tuning instead
  trains per-layer key/value prefixes; the paper's PrefixLayer replaces activations, which is what we do.)
Encoders keep [CLS] first (the prefix goes after position 0) so their pooler still reads [CLS]. The outputs are over
the extended sequence: (batch, T + l_p + l_i, ...). Supported: the model's forward with `input_ids` (training and
scoring); incremental decoding through `generate()` is not.
"""
from __future__ import annotations

import torch
from torch import nn

from lora.targets import blocks_of

_DECODERS = ("gpt2", "llama")


class InsertedPositions(nn.Module):
    """Where the l_p + l_i positions go and what fills them at the input."""

    def __init__(self, model: nn.Module, l_p: int, l_i: int, trainable_embeddings: bool):
        super().__init__()
        if l_p < 0 or l_i < 0 or l_p + l_i == 0:
            raise ValueError(f"prefix lengths must be >= 0 with l_p + l_i > 0, got l_p={l_p}, l_i={l_i}")
        emb = model.get_input_embeddings()
        w = emb.weight
        self.l_p, self.l_i = l_p, l_i
        self.keep_first = 0 if model.config.model_type in _DECODERS else 1
        if trainable_embeddings:
            # start from the embeddings of random vocabulary tokens rather than zeros, as prompt tuning usually does
            idx = torch.randint(0, w.shape[0], (l_p + l_i,)).to(w.device)
            self.embeddings = nn.Parameter(w.detach()[idx].clone())
        else:
            tokens = torch.zeros(l_p + l_i, w.shape[1], device=w.device, dtype=w.dtype)
            self.register_buffer("embeddings", tokens, persistent=False)
        self.positions: torch.Tensor | None = None  # (batch, l_p + l_i) of the last forward

    def hook(self, model: nn.Module, args: tuple, kwargs: dict):
        input_ids = kwargs.pop("input_ids", None)
        if input_ids is None and args:
            input_ids, args = args[0], args[1:]
        if input_ids is None:
            raise ValueError("prefix tuning needs `input_ids` (it builds inputs_embeds itself)")
        batch, length = input_ids.shape
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        real = mask.sum(dim=1)  # (batch,) right padding assumed
        new_len = length + self.l_p + self.l_i
        # dest[b, t]: where token t of row b goes; inserted positions fill the gaps
        t = torch.arange(length, device=input_ids.device).expand(batch, length)
        dest = t + (t >= self.keep_first) * self.l_p + (t >= real[:, None]) * self.l_i
        prefix_pos = self.keep_first + torch.arange(self.l_p, device=t.device).expand(batch, self.l_p)
        infix_pos = real[:, None] + self.l_p + torch.arange(self.l_i, device=t.device)
        self.positions = torch.cat([prefix_pos, infix_pos], dim=1)  # (batch, l_p + l_i)
        rows = torch.arange(batch, device=t.device)[:, None]

        token_emb = model.get_input_embeddings()(input_ids)  # (batch, T, d)
        embeds = token_emb.new_zeros(batch, new_len, token_emb.shape[-1])
        embeds = embeds.index_put((rows.expand_as(dest), dest), token_emb)
        inserted = self.embeddings.to(token_emb.dtype).expand(batch, -1, -1)
        embeds = embeds.index_put((rows.expand_as(self.positions), self.positions), inserted)
        kwargs["inputs_embeds"] = embeds

        def extend(x: torch.Tensor, fill) -> torch.Tensor:
            out = x.new_full((batch, new_len), fill)
            out[rows.expand_as(dest), dest] = x
            return out

        new_mask = extend(mask, 0)
        new_mask[rows.expand_as(self.positions), self.positions] = 1
        kwargs["attention_mask"] = new_mask
        if kwargs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = extend(kwargs["token_type_ids"], 0)
        if kwargs.get("labels") is not None and kwargs["labels"].dim() == 2:
            kwargs["labels"] = extend(kwargs["labels"], -100)
        if kwargs.get("position_ids") is not None:
            kwargs.pop("position_ids")  # recomputed by the model for the extended sequence
        return args, kwargs


class LayerActivations(nn.Module):
    """Trainable hidden states (L, l_p + l_i, d) that replace each block's output at the inserted positions."""

    def __init__(self, n_layers: int, n_positions: int, d: int, device=None, dtype=None):
        super().__init__()
        self.activations = nn.Parameter(torch.randn(n_layers, n_positions, d, device=device, dtype=dtype) * 0.02)

    def block_hook(self, layer: int, positions: InsertedPositions):
        def hook(block, args, output):
            hidden = output[0] if isinstance(output, tuple) else output  # (batch, T', d)
            pos = positions.positions
            rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(pos)
            values = self.activations[layer].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            hidden = hidden.index_put((rows, pos), values)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook


def inject_prefix_embed(model: nn.Module, l_p: int, l_i: int) -> InsertedPositions:
    positions = InsertedPositions(model, l_p, l_i, trainable_embeddings=True)
    _attach(model, positions)
    return positions


def inject_prefix_layer(model: nn.Module, l_p: int, l_i: int) -> LayerActivations:
    positions = InsertedPositions(model, l_p, l_i, trainable_embeddings=False)
    _attach(model, positions)
    blocks = blocks_of(model)
    w = model.get_input_embeddings().weight
    acts = LayerActivations(len(blocks), l_p + l_i, w.shape[1], device=w.device, dtype=w.dtype)
    model.prefix_layer = acts
    for i, block in enumerate(blocks):
        block.register_forward_hook(acts.block_hook(i, positions))
    return acts


def _attach(model: nn.Module, positions: InsertedPositions) -> None:
    if hasattr(model, "prefix_positions"):
        raise ValueError("the model already carries prefix positions; apply one prefix method to a fresh model")
    model.prefix_positions = positions
    model.register_forward_pre_hook(positions.hook, with_kwargs=True)
