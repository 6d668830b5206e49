"""LoRA: h = W0 x + (alpha / r) · B A x, with W0 frozen, A random and B zero at initialisation.

`LoRALinear` wraps a base `nn.Linear` or GPT-2 `Conv1D` (weight stored in × out, "fan_in_fan_out") and never edits it
except in `merge()`. A fused projection (GPT-2's c_attn = [q | k | v]) gets one (A, B) pair per adapted slice, so Wq
and Wv can be adapted without touching Wk, as the authors' `MergedLinear(enable_lora=[True, False, True])` does.

State-dict keys: the base module lives at `<path>.base`, so its weight key becomes `<path>.base.weight`; pretrained
weights are loaded before injection, and adapters are saved on their own (`lora.io`), so nothing needs the old keys.
"""
from __future__ import annotations

import math

from typing import Callable

import torch
from torch import nn

from lora.methods import Method

from lora.targets import family_of, find_targets


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D, without importing transformers


def in_out_features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if _is_conv1d(module):
        return module.weight.shape[0], module.weight.shape[1]
    raise TypeError(f"LoRA wraps nn.Linear or GPT-2 Conv1D, not {type(module).__name__}")


class LoRALinear(nn.Module):
    """A frozen base projection plus low-rank updates on output slices.

    slices: role -> (start, end) output features it adapts; None adapts the whole output under the name "" (then the
    parameters are plain `lora_A` (r × in) and `lora_B` (out × r), the key names PEFT and loralib use; a slice's are
    `lora_A_<role>` (r × in) and `lora_B_<role>` (end - start × r)). Output features outside every slice get exactly
    zero update.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 slices: dict[str, tuple[int, int]] | None = None, rank_stabilised: bool = False):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        self.base = base
        base.requires_grad_(False)  # W0 stays frozen whatever the caller did before injection
        self.fan_in_fan_out = _is_conv1d(base)
        self.in_features, self.out_features = in_out_features(base)
        self.r, self.alpha, self.rank_stabilised = r, alpha, rank_stabilised
        self.scaling = alpha / math.sqrt(r) if rank_stabilised else alpha / r  # rsLoRA: alpha / sqrt(r)
        self.slices = dict(slices) if slices is not None else {"": (0, self.out_features)}
        self._check_slices()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.dropout_p = dropout
        self.merged = False
        w = base.weight
        for role, (start, end) in self.slices.items():
            a = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
            # loralib's init (kaiming-uniform A); the paper says "random Gaussian": only the scale of A differs.
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = nn.Parameter(torch.zeros(end - start, r, device=w.device, dtype=w.dtype))
            self.register_parameter(self._name("lora_A", role), a)
            self.register_parameter(self._name("lora_B", role), b)

    def _check_slices(self) -> None:
        if not self.slices:
            raise ValueError("slices is empty; pass None to adapt the whole output or name at least one slice")
        spans = sorted(self.slices.values())
        for start, end in spans:
            if not 0 <= start < end <= self.out_features:
                raise ValueError(f"slice ({start}, {end}) is outside the {self.out_features} output features")
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                raise ValueError(f"slices {self.slices} overlap; each output feature may belong to one slice only")

    @staticmethod
    def _name(kind: str, role: str) -> str:
        return f"{kind}_{role}" if role else kind

    def pair(self, role: str) -> tuple[nn.Parameter, nn.Parameter]:
        """(A, B) of one slice; role "" for an unsliced layer."""
        return getattr(self, self._name("lora_A", role)), getattr(self, self._name("lora_B", role))

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B A in the base weight's layout (out × in, or in × out for Conv1D); zero where no slice."""
        first_a = self.pair(next(iter(self.slices)))[0]
        delta = torch.zeros(self.out_features, self.in_features, device=first_a.device, dtype=first_a.dtype)
        for role, (start, end) in self.slices.items():
            a, b = self.pair(role)
            delta[start:end] = (b @ a) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight: inference then costs exactly what the base model costs.

        Merging a merged layer is a no-op (so is unmerging an unmerged one): `merged` records the state.
        """
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.merged:
            # loralib unmerges silently on train(); here merging is explicit, so training a merged layer (A, B would
            # get no gradient and W0 would carry a stale ΔW) is an error instead.
            if self.training and torch.is_grad_enabled() and self.pair(next(iter(self.slices)))[0].requires_grad:
                raise RuntimeError("a merged LoRA layer was called in training mode; call lora.layers.unmerge_lora("
                                   "model) before training, or model.eval() / torch.no_grad() for inference")
            return y
        h, scale = x, self.scaling
        if self.training and self.dropout_p > 0:  # dropout on the LoRA path only, as in loralib
            h = torch.where(dropout_keep_mask(x, self.dropout_p), x, 0.0)
            scale = self.scaling / (1.0 - self.dropout_p)  # dropout's 1/(1-p) rides on the rank-r product
        if list(self.slices) == [""]:
            a, b = self.pair("")
            # y + scale · (h A^T) B^T in one GEMM: the add and both scalings never touch an (..., out) tensor
            out = torch.addmm(y.reshape(-1, self.out_features), h.reshape(-1, self.in_features) @ a.T, b.T,
                              alpha=scale)
            return out.view(y.shape)
        pieces, cursor = [], 0
        for role, (start, end) in sorted(self.slices.items(), key=lambda kv: kv[1][0]):
            if start > cursor:
                pieces.append(y.new_zeros(*y.shape[:-1], start - cursor))
            a, b = self.pair(role)
            pieces.append((h @ a.T) @ (b.T * scale))  # (..., end - start)
            cursor = end
        if cursor < self.out_features:
            pieces.append(y.new_zeros(*y.shape[:-1], self.out_features - cursor))
        return y + torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        roles = ",".join(r or "all" for r in self.slices)
        return f"r={self.r}, alpha={self.alpha}, slices={roles}, merged={self.merged}"


def dropout_keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A bool mask shaped like x, each entry True with probability 1 - p, independently (to within 2^-32).

    Same distribution as nn.Dropout's mask, cheaper on CPU: torch draws an int64's 64 random bits in a fraction of
    the time bernoulli_ takes per float, and each int64 gives two entries (512 × 576 entries, 2 threads: 0.3 ms of
    random bits vs 2.6 ms of bernoulli_).
    """
    n = x.numel()
    bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 1) // 2,), dtype=torch.int64, device=x.device)
    bits = bits.view(torch.int32)[:n].view(x.shape)  # uniform on [-2^31, 2^31)
    return bits >= round(p * 2 ** 32) - 2 ** 31


def _fused_slices(model: nn.Module, module: nn.Module, fused: tuple[str, ...], roles: tuple[str, ...], path: str
                  ) -> dict[str, tuple[int, int]]:
    """Output slices of the roles adapted in a fused projection: c_attn (in, 3·n_embd) → q, k, v each n_embd wide."""
    _, out = in_out_features(module)
    width = getattr(getattr(model, "config", None), "n_embd", None) or out // len(fused)
    if width * len(fused) != out:
        raise ValueError(f"{path} has {out} output features, expected {len(fused)} × {width} for fused "
                         f"{'/'.join(fused)}; is model.config.n_embd right for this model?")
    return {role: (i * width, (i + 1) * width) for i, role in enumerate(fused) if role in roles}


def inject_lora(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float,
                rank_stabilised: bool = False) -> list[str]:
    """Wrap every module that `targets` (roles) names; returns the wrapped module paths.

    Only the new A and B require grad afterwards among the wrapped modules' parameters; the rest of the model is left
    as it was (`apply_method` freezes it).
    """
    family = family_of(model)
    paths = []
    for target in find_targets(model, targets):
        module = model.get_submodule(target.path)
        if isinstance(module, LoRALinear):
            raise ValueError(f"{target.path} already carries LoRA; apply the method to a fresh model")
        slices = None
        if target.roles[0] in family.fused_qkv:
            slices = _fused_slices(model, module, family.fused_qkv, target.roles, target.path)
        parent_path, _, child = target.path.rpartition(".")
        layer = LoRALinear(module, r, alpha, dropout, slices, rank_stabilised)
        layer.train(module.training)  # a new module starts in train mode; an eval() model must not get LoRA dropout
        setattr(model.get_submodule(parent_path), child, layer)
        paths.append(target.path)
    return paths


def inject_unsliced(model: nn.Module, targets: list[str], make: Callable[[nn.Module], LoRALinear], method: str
                    ) -> list[str]:
    """Wrap each `targets` module in `make(module)` (a LoRALinear variant on one whole matrix: DoRA, PiSSA); a fused
    q/k/v projection is refused. Returns the wrapped module paths."""
    family = family_of(model)
    paths = []
    for target in find_targets(model, targets):
        if target.roles[0] in family.fused_qkv:
            raise ValueError(f"{target.path} is a fused q/k/v projection; {method} needs one matrix per target "
                             "(use method=lora on this model)")
        module = model.get_submodule(target.path)
        if isinstance(module, LoRALinear):
            raise ValueError(f"{target.path} already carries LoRA; apply the method to a fresh model")
        layer = make(module)
        layer.train(module.training)
        parent_path, _, child = target.path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, layer)
        paths.append(target.path)
    return paths


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRA layer of the model by module path (e.g. 'transformer.h.0.attn.c_attn')."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


# ---------------------------------------------------------------------------------------------- the method
LORA_FIELDS = ("r", "alpha", "dropout", "targets", "scaling", "lr_ratio_b")
SCALINGS = ("standard", "rs")


def check_lora(cfg) -> None:
    if cfg.r < 1:
        raise ValueError(f"method.r must be >= 1 for {cfg.name} (the rank of each update BA), got {cfg.r}; "
                         "the paper uses 1 to 64, e.g. method.r=8")
    if cfg.alpha <= 0:
        raise ValueError(f"method.alpha must be > 0 (the update BA is scaled by alpha / r), got {cfg.alpha}; "
                         "e.g. method.alpha=8, or alpha = r for a scale of 1")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"method.dropout must be in [0, 1), got {cfg.dropout}")
    if not cfg.targets:
        raise ValueError("method.targets is empty; name at least one role, e.g. method.targets=[q,v]")
    if cfg.scaling not in SCALINGS:
        raise ValueError(f"method.scaling={cfg.scaling!r}; known: standard (alpha / r), rs (alpha / sqrt(r))")
    if cfg.lr_ratio_b <= 0:
        raise ValueError(f"method.lr_ratio_b must be > 0 (B's learning rate over A's; LoRA+ uses 16), got "
                         f"{cfg.lr_ratio_b}")


def inject_lora_of(model: nn.Module, cfg) -> list[str]:
    return inject_lora(model, cfg.targets, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout,
                       rank_stabilised=cfg.scaling == "rs")


METHODS = (Method("lora", "low-rank updates BA of the `targets` weight matrices (LoRA)", (*LORA_FIELDS, "train_also"),
                  inject_lora_of, check_lora, has_delta_w=True),)
