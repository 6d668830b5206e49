"""LoRA: h = W0 x + (alpha / r) · B A x, with W0 frozen, A random and B zero at initialisation.

`LoRALinear` wraps a base `nn.Linear` or GPT-2 `Conv1D` (weight stored in × out, "fan_in_fan_out") and never edits it
except in `merge()`. A fused projection (GPT-2's c_attn = [q | k | v]) gets one (A, B) pair per adapted slice, so Wq
and Wv can be adapted without touching Wk, as the authors' `MergedLinear` does and PEFT cannot.
"""
from __future__ import annotations

import math

import torch
from torch import nn

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
    parameters are plain `lora_A` (r × in) and `lora_B` (out × r), the key names PEFT and loralib use).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 slices: dict[str, tuple[int, int]] | None = None):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        self.base = base
        self.fan_in_fan_out = _is_conv1d(base)
        self.in_features, self.out_features = in_out_features(base)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.slices = slices if slices is not None else {"": (0, self.out_features)}
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        w = base.weight
        for role, (start, end) in self.slices.items():
            a = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
            # loralib's init (kaiming-uniform A); the paper says "random Gaussian": only the scale of A differs.
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = nn.Parameter(torch.zeros(end - start, r, device=w.device, dtype=w.dtype))
            self.register_parameter(self._name("lora_A", role), a)
            self.register_parameter(self._name("lora_B", role), b)

    @staticmethod
    def _name(kind: str, role: str) -> str:
        return f"{kind}_{role}" if role else kind

    def pair(self, role: str) -> tuple[nn.Parameter, nn.Parameter]:
        return getattr(self, self._name("lora_A", role)), getattr(self, self._name("lora_B", role))

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B A in the base weight's layout (out × in, or in × out for Conv1D); zero rows where no slice."""
        first_a = self.pair(next(iter(self.slices)))[0]
        delta = torch.zeros(self.out_features, self.in_features, device=first_a.device, dtype=first_a.dtype)
        for role, (start, end) in self.slices.items():
            a, b = self.pair(role)
            delta[start:end] = (b @ a) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight: inference then costs exactly what the base model costs. Idempotent."""
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
            return y
        h = self.dropout(x)
        if list(self.slices) == [""]:
            a, b = self.pair("")
            return y + (h @ a.T @ b.T) * self.scaling
        pieces, cursor = [], 0
        for role, (start, end) in sorted(self.slices.items(), key=lambda kv: kv[1][0]):
            if start > cursor:
                pieces.append(y.new_zeros(*y.shape[:-1], start - cursor))
            a, b = self.pair(role)
            pieces.append((h @ a.T @ b.T) * self.scaling)
            cursor = end
        if cursor < self.out_features:
            pieces.append(y.new_zeros(*y.shape[:-1], self.out_features - cursor))
        return y + torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        roles = ",".join(r or "all" for r in self.slices)
        return f"r={self.r}, alpha={self.alpha}, slices={roles}, merged={self.merged}"


def inject_lora(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float) -> list[str]:
    """Wrap every module that `targets` (roles) names; returns the wrapped module paths."""
    family = family_of(model)
    paths = []
    for target in find_targets(model, targets):
        module = model.get_submodule(target.path)
        if isinstance(module, LoRALinear):
            raise ValueError(f"{target.path} already carries LoRA; apply the method to a fresh model")
        slices = None
        if target.roles[0] in family.fused_qkv:
            _, out = in_out_features(module)
            width = out // len(family.fused_qkv)  # c_attn: (in, 3·d) → q, k, v each d wide
            slices = {role: (i * width, (i + 1) * width) for i, role in enumerate(family.fused_qkv)
                      if role in target.roles}
        parent_path, _, child = target.path.rpartition(".")
        setattr(model.get_submodule(parent_path), child, LoRALinear(module, r, alpha, dropout, slices))
        paths.append(target.path)
    return paths


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()
