"""DoRA (Liu et al., 2024): LoRA's update applied to the direction of W only, with a trained magnitude per output.

    W' = m ⊙ (W0 + s·BA) / ‖W0 + s·BA‖_row          m: (out,), initialised to ‖W0‖_row, so W' = W0 at the start

‖·‖_row is the norm of each output feature's weights (each row of nn.Linear's out × in weight), PEFT's convention.
As in the paper (Section 4.3) and PEFT, the norm is treated as a constant in the backward pass. Merging is not
additive: merge() writes W' into the base weight and keeps the norm it divided by, so unmerge() restores W0.
"""
from __future__ import annotations

import torch
from torch import nn

from lora.layers import LORA_FIELDS, LoRALinear, check_lora, inject_unsliced
from lora.methods import Method


class DoRALinear(LoRALinear):
    """A LoRALinear on a whole (unsliced) projection, plus the magnitude vector `lora_magnitude` (out,)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, rank_stabilised: bool = False):
        super().__init__(base, r, alpha, dropout, None, rank_stabilised)
        if self.fan_in_fan_out:
            raise ValueError("DoRA is implemented for nn.Linear projections; GPT-2's Conv1D c_attn holds q, k, v fused "
                             "(use method=lora there)")
        self.lora_magnitude = nn.Parameter(self._row_norm(base.weight.detach()).clone())  # (out,)
        self.register_buffer("_merge_norm", None, persistent=False)

    @staticmethod
    def _row_norm(w: torch.Tensor) -> torch.Tensor:
        return w.norm(p=2, dim=1)

    def _adapted_norm(self) -> torch.Tensor:
        """‖W0 + s·BA‖ per output feature (out,), detached: a constant in the backward pass."""
        w0 = self.base.weight
        return self._row_norm(w0 + self.delta_weight().to(w0.dtype)).detach()

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            norm = self._adapted_norm()
            w = self.base.weight
            w.copy_((self.lora_magnitude / norm).unsqueeze(1).to(w.dtype) * (w + self.delta_weight().to(w.dtype)))
            self._merge_norm = norm
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            w = self.base.weight
            w.copy_((self._merge_norm / self.lora_magnitude).unsqueeze(1).to(w.dtype) * w
                    - self.delta_weight().to(w.dtype))
            self._merge_norm = None
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return super().forward(x)
        y = super().forward(x)  # W0 x + b + s·BA x  (..., out)
        bias = self.base.bias
        scale = self.lora_magnitude / self._adapted_norm()  # (out,)
        return (y - bias) * scale + bias if bias is not None else y * scale

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dora"


def inject_dora(model: nn.Module, cfg) -> list[str]:
    return inject_unsliced(model, cfg.targets, lambda m: DoRALinear(m, cfg.r, cfg.alpha, cfg.dropout, cfg.scaling == "rs"),
                           "DoRA")


METHODS = (Method("dora", "LoRA's BA on the direction of the `targets` weights plus a magnitude per output (DoRA)",
                  (*LORA_FIELDS, "train_also"), inject_dora, check_lora, has_delta_w=True),)
