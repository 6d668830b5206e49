"""PrefixEmbed and PrefixLayer (Section 5.1 of the paper), without editing any transformers code.

Both insert l_p "prefix" positions before the input and l_i "infix" positions right after each row's last real token.
A forward pre-hook on the whole model turns `input_ids` into `inputs_embeds` with those positions inserted and extends
`attention_mask` (1), `token_type_ids` (0) and token-level `labels` (-100) to match; a forward hook maps token-level
`logits` back to the caller's positions.
- PrefixEmbed: the inserted input embeddings are trainable, d·(l_p + l_i) parameters.
- PrefixLayer: trainable activations (L, l_p + l_i, d), L·d·(l_p + l_i) parameters, replace the hidden states at the
  inserted positions wherever they enter a block; the inserted input embeddings are fixed zeros. (Li & Liang's
  prefix-tuning instead trains per-layer key/value prefixes through an MLP; the paper's PrefixLayer replaces
  activations, which is what we do.)

Supported, and checked with a clear error otherwise:
- a forward call `model(input_ids=..., attention_mask=..., [token_type_ids=...], [labels=...], ...)`; `input_ids` may
  be the only positional argument. Shapes: input_ids (batch, T); rows right-padded (each row's real tokens first, at
  least one of them); T + l_p + l_i within the model's position limit.
- no KV cache through the hooks: `past_key_values` is refused. Decoders decode with a cache through
  `cached_decoding` instead: the prefix's own keys and values, computed once, and the hooks off.
Outputs: token-level `logits` come back as (batch, T, vocab), aligned with `input_ids` (the inserted positions are
dropped); sequence-level logits (batch, num_labels) of a decoder classifier are pooled at each row's last attended
position (its last infix slot, or its last real token when l_i = 0), as without the prefix; `hidden_states`/`attentions` stay over the extended
sequence (batch, T + l_p + l_i, ...), whose inserted positions are `model.prefix_positions.positions`.
Where the prefix goes:
- encoders (BERT family): after position 0, so [CLS] stays first and the pooler still reads it;
- decoders (GPT-2, Llama): at position 0, before any BOS token.
For decoders the first real token is not a prediction target (label -100), as without the prefix: so the model's loss
is exactly the causal-LM loss of the returned (batch, T, vocab) logits against the caller's labels.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from lora.layers import LORA_FIELDS, check_lora, inject_lora_of
from lora.methods import Method
from lora.targets import blocks_of

_DECODERS = ("gpt2", "llama")


class InsertedPositions(nn.Module):
    """Where the l_p + l_i positions go and what fills them at the input."""

    def __init__(self, model: nn.Module, l_p: int, l_i: int, trainable_embeddings: bool):
        super().__init__()
        if l_p < 0 or l_i < 0 or l_p + l_i == 0:
            raise ValueError(f"prefix lengths must be >= 0 with l_p + l_i > 0, got l_p={l_p}, l_i={l_i}")
        w = model.get_input_embeddings().weight  # (vocab, d)
        self.l_p, self.l_i = l_p, l_i
        self.decoder = model.config.model_type in _DECODERS
        self.keep_first = 0 if self.decoder else 1
        cfg = model.config
        self.max_positions = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if trainable_embeddings:
            # start from the embeddings of random vocabulary tokens rather than zeros, as prompt tuning usually does;
            # the paper does not say how it initialises them
            idx = torch.randint(0, w.shape[0], (l_p + l_i,)).to(w.device)
            self.embeddings = nn.Parameter(w.detach()[idx].clone())  # (l_p + l_i, d)
        else:
            tokens = torch.zeros(l_p + l_i, w.shape[1], device=w.device, dtype=w.dtype)
            self.register_buffer("embeddings", tokens, persistent=False)
        self.positions: torch.Tensor | None = None  # (batch, l_p + l_i) inserted positions of the last forward
        self.dest: torch.Tensor | None = None  # (batch, T) where each caller position went in the last forward
        self.last: torch.Tensor | None = None  # (batch,) each row's last attended position (decoders pool there)
        self.enabled = True  # False inside cached_decoding: the hooks pass everything through
        self._keep_cache = False  # True while cached_decoding builds the prefix's cache

    def _layout(self, mask: torch.Tensor) -> None:
        """Fill self.dest and self.positions for a right-padded (batch, T) attention mask."""
        batch, length = mask.shape
        if (mask[:, 1:] > mask[:, :-1]).any():
            raise ValueError("prefix tuning needs right-padded batches (real tokens first, then padding); set the "
                             "tokenizer's padding_side='right'")
        real = mask.sum(dim=1)  # (batch,)
        if (real < 1).any():
            raise ValueError("prefix tuning needs at least one real token in every row; a row's attention_mask is "
                             "all 0: drop empty rows")
        new_len = length + self.l_p + self.l_i
        if self.max_positions is not None and new_len > self.max_positions:
            keep = self.max_positions - self.l_p - self.l_i
            way_out = (f"truncate inputs to {keep} tokens" if keep > 0 else
                       f"lower l_p + l_i below {self.max_positions} (this model cannot hold that many prefix tokens)")
            raise ValueError(f"the input length {length} plus l_p + l_i = {self.l_p + self.l_i} exceeds the model's "
                             f"{self.max_positions} positions; {way_out}")
        t = torch.arange(length, device=mask.device).expand(batch, length)
        # caller token t moves right by l_p once past the kept first token, and by l_i more once in the padding
        self.dest = t + (t >= self.keep_first) * self.l_p + (t >= real[:, None]) * self.l_i
        prefix_pos = self.keep_first + torch.arange(self.l_p, device=mask.device).expand(batch, self.l_p)
        infix_pos = real[:, None] + self.l_p + torch.arange(self.l_i, device=mask.device)
        self.positions = torch.cat([prefix_pos, infix_pos], dim=1)
        self.last = real + self.l_p + self.l_i - 1

    def pre_hook(self, model: nn.Module, args: tuple, kwargs: dict):
        if not self.enabled:
            return None
        if len(args) > 1:
            raise ValueError("with prefix tuning pass everything but input_ids by keyword (model(ids, attention_mask="
                             "mask, ...)), so the hook can extend them")
        input_ids = args[0] if args else kwargs.pop("input_ids", None)
        if input_ids is None:
            raise ValueError("prefix tuning needs `input_ids` (it builds inputs_embeds itself); inputs_embeds alone "
                             "is not supported")
        if kwargs.get("past_key_values") is not None:
            raise ValueError("prefix tuning does not support a KV cache (generate() or past_key_values); decode by "
                             "re-running the full forward with use_cache=False")
        if self.decoder and not self._keep_cache:
            kwargs["use_cache"] = False  # a cache over the extended sequence would not line up with the caller's tokens
        batch, length = input_ids.shape
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        self._layout(mask)
        new_len = length + self.l_p + self.l_i
        rows = torch.arange(batch, device=input_ids.device)[:, None]
        dest_idx = (rows.expand_as(self.dest), self.dest)
        ins_idx = (rows.expand_as(self.positions), self.positions)

        token_emb = model.get_input_embeddings()(input_ids)  # (batch, T, d)
        embeds = token_emb.new_zeros(batch, new_len, token_emb.shape[-1])
        embeds = embeds.index_put(dest_idx, token_emb)
        inserted = self.embeddings.to(token_emb.dtype).expand(batch, -1, -1)  # (batch, l_p + l_i, d)
        kwargs["inputs_embeds"] = embeds.index_put(ins_idx, inserted)

        def extend(x: torch.Tensor, fill) -> torch.Tensor:
            out = x.new_full((batch, new_len), fill)
            out[dest_idx] = x
            return out

        new_mask = extend(mask, 0)
        new_mask[ins_idx] = 1
        kwargs["attention_mask"] = new_mask
        if kwargs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = extend(kwargs["token_type_ids"], 0)
        labels = kwargs.get("labels")
        if labels is not None and labels.dim() == 2:  # token-level labels; (batch,) class labels stay as they are
            labels = extend(labels, -100)
            if self.decoder and self.l_p:
                labels[:, self.l_p] = -100  # the first real token: without a prefix nothing predicts it
            kwargs["labels"] = labels
        # right padding: the model's default positions 0..T'-1 are right for the extended sequence
        kwargs.pop("position_ids", None)
        return (), kwargs

    def post_hook(self, model: nn.Module, args: tuple, kwargs: dict, output):
        if not self.enabled:
            return output
        logits = getattr(output, "logits", None)
        if logits is not None and logits.dim() == 3 and logits.shape[1] == self.dest.shape[1] + self.l_p + self.l_i:
            rows = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(self.dest)
            output.logits = logits[rows, self.dest]  # (batch, T, vocab)
        return output

    def pooled_score_hook(self, score: nn.Module, args: tuple, logits: torch.Tensor) -> torch.Tensor:
        """A decoder classifier pools its score logits (batch, T', labels) at the last non-pad *input id*; from
        inputs_embeds it takes position T'-1, padding in a right-padded batch. Put each row's last attended position
        (its last infix slot, or its last real token when l_i = 0) at T'-1 instead."""
        if logits.dim() != 3 or self.last is None or logits.shape[1] != self.dest.shape[1] + self.l_p + self.l_i:
            return logits  # not the model's own call over the extended sequence
        rows = torch.arange(logits.shape[0], device=logits.device)
        return torch.cat([logits[:, :-1], logits[rows, self.last][:, None]], dim=1)


class LayerActivations(nn.Module):
    """Trainable hidden states (L, l_p + l_i, d); row i replaces block i's input at the inserted positions."""

    def __init__(self, n_layers: int, n_positions: int, d: int, device=None, dtype=None):
        super().__init__()
        # small random start; the paper does not say how it initialises them
        self.activations = nn.Parameter(torch.randn(n_layers, n_positions, d, device=device, dtype=dtype) * 0.02)

    def block_pre_hook(self, layer: int, positions: InsertedPositions):
        # Departure in placement, not count: the paper replaces the activations "after every Transformer layer"; we
        # replace them where they enter each block (embedding output and blocks 0..L-2), because what the last block
        # writes at those positions is read by nothing, so those d·(l_p + l_i) parameters would get no gradient.
        def hook(block, args, kwargs):
            if not positions.enabled:
                return None
            from_args = bool(args)
            hidden = args[0] if from_args else kwargs["hidden_states"]  # (batch, T', d)
            pos = positions.positions
            rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(pos)
            values = self.activations[layer].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            hidden = hidden.index_put((rows, pos), values)
            if from_args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return hook


@contextmanager
def cached_decoding(model: nn.Module, rows: int) -> Iterator[object | None]:
    """A decoder with PrefixEmbed/PrefixLayer decoding with a KV cache: yields the cache of its l_p prefix positions
    for `rows` rows (None when l_p = 0) with the hooks off, for `generate(past_key_values=...)` on inputs that start
    with l_p placeholder tokens (attention mask 1) the cache stands for.

    Exact, not an approximation: the prefix comes first and attends only to itself, so its keys and values are the
    same for every prompt; the l_i infix positions sit after the last real token, which under causal attention no
    earlier token sees, so decoding never reads them (a full re-forward through the hooks ignores them too).
    """
    positions: InsertedPositions = model.prefix_positions
    if not positions.decoder:
        raise ValueError("cached_decoding is for decoders (GPT-2, Llama); an encoder does not generate")
    cache = None
    if positions.l_p:
        device = model.get_input_embeddings().weight.device
        one = torch.zeros((rows, 1), dtype=torch.long, device=device)  # any token: only the prefix is kept
        positions._keep_cache = True
        try:
            cache = model(input_ids=one, attention_mask=torch.ones_like(one), use_cache=True).past_key_values
        finally:
            positions._keep_cache = False
        cache.crop(-(cache.get_seq_length() - positions.l_p))  # (rows, heads, l_p, head_dim) per layer: the prefix
    positions.enabled = False
    try:
        yield cache
    finally:
        positions.enabled = True


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
        block.register_forward_pre_hook(acts.block_pre_hook(i, positions), with_kwargs=True)
    return acts


def _attach(model: nn.Module, positions: InsertedPositions) -> None:
    if hasattr(model, "prefix_positions"):
        raise ValueError("the model already carries prefix positions; apply one prefix method to a fresh model")
    model.prefix_positions = positions
    model.register_forward_pre_hook(positions.pre_hook, with_kwargs=True)
    model.register_forward_hook(positions.post_hook, with_kwargs=True)
    score = getattr(model, "score", None)  # a decoder's sequence-classification head (GPT-2, Llama)
    if positions.decoder and isinstance(score, nn.Module):
        score.register_forward_hook(positions.pooled_score_hook)


PREFIX_FIELDS = ("l_p", "l_i")


def check_prefix(cfg) -> None:
    if cfg.l_p < 0 or cfg.l_i < 0:
        raise ValueError(f"method.l_p and method.l_i must be >= 0 (prefix and infix lengths, in tokens), got "
                         f"l_p={cfg.l_p}, l_i={cfg.l_i}; e.g. method.l_p=8 method.l_i=8")
    if cfg.l_p + cfg.l_i == 0:
        raise ValueError("prefix tuning needs method.l_p + method.l_i > 0 (no trainable tokens otherwise); "
                         "e.g. method.l_p=8")


def _lora_and(inject_prefix):
    def inject(model: nn.Module, cfg) -> None:
        inject_lora_of(model, cfg)
        inject_prefix(model, cfg.l_p, cfg.l_i)
    return inject


def _both(cfg) -> None:
    check_lora(cfg)
    check_prefix(cfg)


METHODS = (
    Method("prefix_embed", "l_p prefix + l_i infix trainable input embeddings (PrefixEmbed)",
           (*PREFIX_FIELDS, "train_also"), lambda model, cfg: inject_prefix_embed(model, cfg.l_p, cfg.l_i),
           check_prefix),
    Method("prefix_layer", "trainable activations at l_p + l_i positions after every layer (PrefixLayer)",
           (*PREFIX_FIELDS, "train_also"), lambda model, cfg: inject_prefix_layer(model, cfg.l_p, cfg.l_i),
           check_prefix),
    Method("lora_pe", "LoRA plus PrefixEmbed (LoRA+PE)", (*LORA_FIELDS, *PREFIX_FIELDS, "train_also"),
           _lora_and(inject_prefix_embed), _both, has_delta_w=True),
    Method("lora_pl", "LoRA plus PrefixLayer (LoRA+PL)", (*LORA_FIELDS, *PREFIX_FIELDS, "train_also"),
           _lora_and(inject_prefix_layer), _both, has_delta_w=True),
)
