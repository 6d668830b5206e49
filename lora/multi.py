"""Many LoRA adapters in one model: each row of a batch names its adapter, all rows computed in one forward pass.

    bank = lora.multi.attach_adapters(model, {"e2e": "runs/e2e/adapter.safetensors", "dart": dart_state}, alpha=16)
    with bank.use(["e2e", "none", "dart"]):          # one entry per row; "none" = the base model alone
        logits = model(input_ids=ids).logits          # ids: (3, T)
        out = model.generate(ids, num_beams=2)        # rows that generate expands follow the row they came from

How: every adapted projection becomes a `MultiLoRALinear` that keeps the K adapters stacked, A as (K+1, in, R) and
the pre-scaled B as (K+1, R, out), slot 0 all zeros ("none"). A forward gathers each row's slot (index_select) and
adds bmm(bmm(x, A[slot]), B[slot]) to the frozen base output: no merging, no Python loop over rows or adapters.
Adapters may differ in rank, alpha and targets: ranks are zero-padded to the largest, and a projection an adapter
does not adapt holds zeros in its slot. A fused projection (GPT-2's c_attn) stacks its slices' (A, B) pairs into one
rank-R pair whose B is zero outside each slice's columns, so an unadapted slice (Wk) gets exactly zero update.

Row ids and generation: the bank holds one adapter slot per input row, set with `bank.use(rows)` (a context manager)
or `bank.set(rows)`, as names, slot numbers or a (B,) LongTensor of slots. A forward of N = m·B rows uses row n's
slot `slots[n // m]`: that is how `generate` lays out the rows it creates (input_ids.repeat_interleave(m) for
num_beams / num_return_sequences, and beam search only reorders beams within their own source row), so the same
(B,) rows stay right through generation with a KV cache. Any other batch size is an error.

Inference only: the stacked tensors are buffers (no gradients, not in state_dict). Train adapters with
`lora.apply_method(model, MethodConfig(name="lora", ...))` and save them with `lora.io.save_adapter`.
"""
from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from lora.io import adapter_metadata, read_safetensors
from lora.layers import LoRALinear, _fused_slices, in_out_features, lora_modules
from lora.targets import family_of

NONE = "none"  # the name of slot 0: no adapter, the base model's output

# one adapter: a lora.io file, an in-memory state dict in that file's key format, or a model carrying LoRALinear layers
AdapterSource = Union[str, os.PathLike, Mapping[str, torch.Tensor], nn.Module]
# path -> role ("" for a whole projection) -> (A (r, in), B (out_slice, r), scaling)
_Pairs = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]

_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<kind>[AB])(?:_(?P<role>[A-Za-z0-9]+))?$")


class MultiLoRALinear(nn.Module):
    """A frozen base projection plus one of K stacked LoRA updates per batch row.

    A_t: (K+1, in, R) and B_t: (K+1, R, out) with B_t already multiplied by each adapter's alpha / r, slot 0 zero.
    """

    def __init__(self, base: nn.Module, a_t: torch.Tensor, b_t: torch.Tensor, bank: "AdapterBank"):
        super().__init__()
        self.base = base
        base.requires_grad_(False)
        self.in_features, self.out_features = in_out_features(base)
        if a_t.shape[1] != self.in_features or b_t.shape[2] != self.out_features or a_t.shape[2] != b_t.shape[1]:
            raise ValueError(f"stacked A {tuple(a_t.shape)} / B {tuple(b_t.shape)} do not fit a projection "
                             f"{self.in_features} -> {self.out_features}")
        self.register_buffer("a_t", a_t, persistent=False)
        self.register_buffer("b_t", b_t, persistent=False)
        self._bank = bank  # a plain attribute (not a submodule): shared by every layer of the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (N, ..., out)
        slots = self._bank.slots_for(x.shape[0], x.device)  # (N,)
        if slots is None:  # every row is "none"
            return y
        h = x.reshape(x.shape[0], -1, self.in_features)  # (N, T, in)
        if isinstance(slots, int):  # every row uses the same adapter: plain matmuls, no gather
            delta = h @ self.a_t[slots] @ self.b_t[slots]
        else:
            a = self.a_t.index_select(0, slots)  # (N, in, R)
            b = self.b_t.index_select(0, slots)  # (N, R, out)
            delta = torch.bmm(torch.bmm(h, a), b)  # (N, T, out)
        return y + delta.reshape(y.shape).to(y.dtype)

    def extra_repr(self) -> str:
        return f"adapters={self.a_t.shape[0] - 1}, rank={self.a_t.shape[2]}"


class AdapterBank:
    """The K adapters attached to one model and the per-row adapter choice its MultiLoRALinear layers read."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.model = model
        self.names = list(names)  # slot i + 1 holds names[i]; slot 0 is "none"
        self.layers: dict[str, MultiLoRALinear] = {}
        self._slots: torch.Tensor | None = None
        self._uniform: int | None = None  # the slot when every row uses the same one
        self._expanded: dict[tuple[int, torch.device], torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------ row ids
    def slots(self, rows: Sequence[str | int] | torch.Tensor) -> torch.Tensor:
        """Names, slot numbers (0 = none) or a LongTensor of slots -> a (B,) LongTensor of slots, checked."""
        if isinstance(rows, torch.Tensor):
            if rows.dim() != 1 or rows.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"adapter rows as a tensor must be a 1-D integer tensor of slots, got "
                                 f"{rows.dtype} {tuple(rows.shape)}")
            out = rows.long()
        else:
            index = {NONE: 0} | {n: i + 1 for i, n in enumerate(self.names)}
            ids = []
            for r in rows:
                if isinstance(r, str):
                    if r not in index:
                        raise KeyError(f"no adapter named {r!r}; attached: {', '.join(index)}")
                    ids.append(index[r])
                else:
                    ids.append(int(r))
            out = torch.tensor(ids, dtype=torch.long)
        if out.numel() == 0:
            raise ValueError("adapter rows are empty: give one adapter (or 'none') per batch row")
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi > len(self.names):
            raise ValueError(f"adapter slot out of range [{lo}, {hi}]: 0 is none, 1..{len(self.names)} are "
                             f"{', '.join(self.names)}")
        return out

    def set(self, rows: Sequence[str | int] | torch.Tensor | None) -> None:
        """Choose the adapter of each input row (None clears the choice, and a forward is then an error)."""
        self._expanded.clear()
        if rows is None:
            self._slots, self._uniform = None, None
            return
        slots = self.slots(rows)
        self._slots = slots
        first = int(slots[0])
        self._uniform = first if bool((slots == first).all()) else None

    def clear(self) -> None:
        self.set(None)

    @contextmanager
    def use(self, rows: Sequence[str | int] | torch.Tensor) -> Iterator["AdapterBank"]:
        """`with bank.use(rows): ...` sets the rows' adapters and restores the previous choice afterwards."""
        previous = self._slots
        self.set(rows)
        try:
            yield self
        finally:
            self.set(previous)

    def slots_for(self, n: int, device: torch.device) -> torch.Tensor | int | None:
        """The slot of each of n rows (tensor), or one int when all rows share it, or None when all are 'none'."""
        if self._slots is None:
            raise RuntimeError("no adapter chosen for the batch rows; wrap the call in `with bank.use(rows):` "
                               "(one adapter name or 'none' per row) or call bank.set(rows)")
        b = self._slots.shape[0]
        if n % b:
            raise ValueError(f"the batch has {n} rows but {b} adapter rows were set; give one per row (generate's "
                             "expansion of each row into m beams / return sequences is followed automatically)")
        if self._uniform is not None:
            return None if self._uniform == 0 else self._uniform
        key = (n, torch.device(device))
        if key not in self._expanded:
            self._expanded[key] = self._slots.repeat_interleave(n // b).to(device)
        return self._expanded[key]

    # ------------------------------------------------------------------------------------------ lifecycle
    def detach(self) -> nn.Module:
        """Put the base projections back; the model is the base model again."""
        for path, layer in self.layers.items():
            parent, _, child = path.rpartition(".")
            setattr(self.model.get_submodule(parent), child, layer.base)
        self.layers.clear()
        return self.model

    def __repr__(self) -> str:
        return f"AdapterBank(adapters={self.names}, layers={len(self.layers)})"


# ---------------------------------------------------------------------------------------------- loading adapters
def _pairs_from_state(state: Mapping[str, torch.Tensor], alpha: float | None, label: str,
                      ignore_extra: bool, rank_stabilised: bool = False) -> _Pairs:
    found: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    extra = []
    for key, t in state.items():
        m = _KEY.match(key)
        if not m:
            extra.append(key)
            continue
        found.setdefault(m["path"], {}).setdefault(m["role"] or "", {})[m["kind"]] = t
    if any(k.endswith(("lora_A.weight", "lora_B.weight")) for k in extra):
        raise ValueError(f"adapter {label!r} is in PEFT's key format ('...lora_A.weight'); pass a lora.io file "
                         "(lora.io.save_adapter), an in-memory state dict in its format, or a LoRA model")
    if extra and not ignore_extra:
        shown = ", ".join(extra[:6]) + (" …" if len(extra) > 6 else "")
        raise ValueError(f"adapter {label!r} holds parameters that are not LoRA's ({shown}): a task head cannot "
                         "differ per row; pass ignore_extra=True to leave them out (the model's own head is used)")
    if not found:
        raise ValueError(f"adapter {label!r} holds no LoRA parameters (keys '<module>.lora_A', '<module>.lora_B')")
    if alpha is None:
        raise ValueError(f"adapter {label!r}: its alpha is unknown (a state dict, or a file without an 'alpha' "
                         "metadata entry); pass alpha= (a number, or one per adapter name)")
    pairs: _Pairs = {}
    for path, roles in found.items():
        for role, ab in roles.items():
            if set(ab) != {"A", "B"}:
                raise ValueError(f"adapter {label!r}: {path} has lora_{next(iter(ab))} without its partner")
            a, b = ab["A"], ab["B"]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(f"adapter {label!r}: {path} has A {tuple(a.shape)} and B {tuple(b.shape)}, "
                                 "expected A (r, in) and B (out, r)")
            r = a.shape[0]
            pairs.setdefault(path, {})[role] = (a.detach(), b.detach(), alpha / (math.sqrt(r) if rank_stabilised else r))
    return pairs


def _pairs_from_model(model: nn.Module, label: str) -> _Pairs:
    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"adapter {label!r} is a model without LoRA layers")
    return {path: {role: (*(p.detach() for p in m.pair(role)), m.scaling) for role in m.slices}
            for path, m in modules.items()}


def _alpha_from_file(path: str | os.PathLike) -> float | None:
    meta = adapter_metadata(path)
    for holder in (meta, meta.get("method") if isinstance(meta.get("method"), dict) else {}):
        for key in ("alpha", "lora_alpha"):
            if isinstance(holder.get(key), (int, float)):
                return float(holder[key])
    return None


def _load(source: AdapterSource, alpha: float | None, label: str, ignore_extra: bool) -> _Pairs:
    if isinstance(source, nn.Module):
        return _pairs_from_model(source, label)
    if isinstance(source, (str, os.PathLike)):
        file_alpha = _alpha_from_file(source)
        rs = adapter_metadata(source).get("scaling") == "rs"  # rsLoRA: alpha / sqrt(r)
        return _pairs_from_state(read_safetensors(source), alpha if alpha is not None else file_alpha, label,
                                 ignore_extra, rs)
    if isinstance(source, Mapping):
        return _pairs_from_state(source, alpha, label, ignore_extra)
    raise TypeError(f"adapter {label!r}: expected a file path, a state dict or a LoRA model, got {type(source)}")


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a model in `lora.io`'s key format (no task head), cloned: an in-memory adapter."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n.rpartition(".")[2]}


# ---------------------------------------------------------------------------------------------- attaching
def attach_adapters(model: nn.Module, adapters: Mapping[str, AdapterSource],
                    alpha: float | Mapping[str, float] | None = None, ignore_extra: bool = False) -> AdapterBank:
    """Wrap every projection any of the adapters adapts in a MultiLoRALinear; returns the bank that picks rows.

    adapters: name -> a `lora.io.save_adapter` file, a state dict in its key format ('<module>.lora_A', or
    '<module>.lora_A_<role>' for a slice of a fused projection), or a model carrying LoRALinear layers (alpha read from
    them). All must come from the same base architecture as `model`, which must be the plain base model.
    alpha: LoRA's alpha for files and state dicts (one number, or name -> number); a file's 'alpha' metadata entry is
    used when it is not given. ignore_extra: leave out non-LoRA tensors (a saved task head) instead of refusing.
    """
    names = list(adapters)
    if not names:
        raise ValueError("no adapters given; pass {name: adapter, ...}")
    if NONE in names:
        raise ValueError(f"{NONE!r} is reserved for 'no adapter' (slot 0); rename that adapter")
    if any(isinstance(m, MultiLoRALinear) for m in model.modules()):
        raise ValueError("this model already has adapters attached; bank.detach() first, then attach all of them")
    if lora_modules(model):
        raise ValueError("the model carries LoRALinear layers; attach adapters to the plain base model (pass this "
                         "model itself as one of the adapters to serve its LoRA)")
    alphas = alpha if isinstance(alpha, Mapping) else {n: alpha for n in names}
    loaded = [_load(adapters[n], alphas.get(n), n, ignore_extra) for n in names]
    bank = AdapterBank(model, names)
    paths = sorted({p for pairs in loaded for p in pairs}, key=_module_order(model))
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"adapter module {path} does not exist in {type(model).__name__}; was the adapter "
                             "trained on another architecture?") from None
        if isinstance(module, LoRALinear):
            raise ValueError(f"{path} carries a LoRALinear; attach adapters to the plain base model")
        roles = sorted({role for pairs in loaded for role in pairs.get(path, {})})
        slices = _slices(model, module, path, roles)
        a_t, b_t = _stack(module, slices, [pairs.get(path, {}) for pairs in loaded], names, path)
        layer = MultiLoRALinear(module, a_t, b_t, bank)
        layer.train(module.training)
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
        bank.layers[path] = layer
    return bank


def adapter_bank(model: nn.Module) -> AdapterBank:
    """The bank attached to `model` by attach_adapters."""
    for m in model.modules():
        if isinstance(m, MultiLoRALinear):
            return m._bank
    raise ValueError("no adapters are attached to this model; call lora.multi.attach_adapters first")


def _module_order(model: nn.Module):
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return lambda path: order.get(path, len(order))


def _slices(model: nn.Module, module: nn.Module, path: str, roles: list[str]) -> dict[str, tuple[int, int]]:
    _, out = in_out_features(module)
    if roles == [""]:
        return {"": (0, out)}
    if "" in roles:
        raise ValueError(f"{path}: adapters disagree on whether it is adapted whole or by slices")
    family = family_of(model)
    unknown = [r for r in roles if r not in family.fused_qkv]
    if unknown:
        raise ValueError(f"{path}: slice roles {unknown} are not slices of a fused projection of a {family.name} "
                         "model")
    return _fused_slices(model, module, family.fused_qkv, tuple(roles), path)


def _stack(module: nn.Module, slices: dict[str, tuple[int, int]], per_adapter: list[dict], names: list[str],
           path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K+1, in, R) and pre-scaled (K+1, R, out), slot 0 zero; R = Σ over slices of the largest rank among adapters."""
    d_in, d_out = in_out_features(module)
    w = module.weight
    rank = {role: max((pairs[role][0].shape[0] for pairs in per_adapter if role in pairs), default=0)
            for role in slices}
    offsets, total = {}, 0
    for role in slices:
        offsets[role] = total
        total += rank[role]
    k = len(per_adapter)
    a_t = torch.zeros(k + 1, d_in, total, device=w.device, dtype=w.dtype)
    b_t = torch.zeros(k + 1, total, d_out, device=w.device, dtype=w.dtype)
    for i, pairs in enumerate(per_adapter, start=1):
        for role, (a, b, scaling) in pairs.items():
            start, end = slices[role]
            r = a.shape[0]
            if a.shape[1] != d_in or b.shape[0] != end - start:
                raise ValueError(f"adapter {names[i - 1]!r}: {path}{'.' + role if role else ''} has A "
                                 f"{tuple(a.shape)}, B {tuple(b.shape)}; the model's projection needs A (r, {d_in}) "
                                 f"and B ({end - start}, r) (another model size?)")
            o = offsets[role]
            a_t[i, :, o:o + r] = a.T.to(a_t)
            b_t[i, o:o + r, start:end] = (b.to(torch.float64) * scaling).T.to(b_t)
    return a_t, b_t


def detach_adapters(model: nn.Module) -> nn.Module:
    """Remove the attached adapters; the model is its plain base model again."""
    return adapter_bank(model).detach()


def slot_names(bank: AdapterBank, slots: Iterable[int]) -> list[str]:
    """Slots -> names ('none' for 0), e.g. for logging which adapter each row used."""
    table = [NONE, *bank.names]
    return [table[int(s)] for s in slots]
