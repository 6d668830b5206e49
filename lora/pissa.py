"""PiSSA (Meng et al., 2024): LoRA initialised on W0's principal singular directions, the rest frozen.

    W0 = U S Vᵀ;  B0 = U_r √(S_r/s),  A0 = √(S_r/s) V_rᵀ  (s: LoRA's scaling),  frozen base W_res = W0 − s·B0A0

so the model starts exactly as W0 and trains the top-r part. Merge and unmerge are LoRA's (additive on W_res).
An adapter file holds A and B; applying method=pissa to the same base model recomputes W_res, so it loads as LoRA's
does. The PEFT export is exact without PiSSA in PEFT: W_res + s·BA − W0 = s·(BA − B0A0), a rank-2r LoRA [B, −B0][A; A0].
"""
from __future__ import annotations

import torch
from torch import nn

from lora.layers import LORA_FIELDS, LoRALinear, check_lora, inject_unsliced
from lora.methods import Method


class PiSSALinear(LoRALinear):
    """A LoRALinear on a whole (unsliced) nn.Linear whose A, B start as W0's top-r singular part."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, rank_stabilised: bool = False):
        super().__init__(base, r, alpha, dropout, None, rank_stabilised)
        if self.fan_in_fan_out:
            raise ValueError("PiSSA is implemented for nn.Linear projections; GPT-2's Conv1D c_attn holds q, k, v "
                             "fused (use method=lora there)")
        w = base.weight
        u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)  # fp64: W_res + s·BA == W0 to fp32
        root = (s[:r] / self.scaling).sqrt()
        a0, b0 = (root[:, None] * vh[:r]), (u[:, :r] * root[None, :])  # (r, in), (out, r)
        with torch.no_grad():
            self.lora_A.copy_(a0.to(w.dtype))
            self.lora_B.copy_(b0.to(w.dtype))
            w.copy_((w.double() - self.scaling * (b0 @ a0)).to(w.dtype))
        self.register_buffer("pissa_A0", a0.to(w.dtype), persistent=False)
        self.register_buffer("pissa_B0", b0.to(w.dtype), persistent=False)

    def peft_pair(self) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """(A, B, rank, alpha) of the equivalent plain LoRA on W0: rank 2r, the same scaling."""
        a = torch.cat([self.lora_A.detach(), self.pissa_A0])
        b = torch.cat([self.lora_B.detach(), -self.pissa_B0], dim=1)
        return a, b, 2 * self.r, (2 ** 0.5 if self.rank_stabilised else 2) * self.alpha

    def extra_repr(self) -> str:
        return super().extra_repr() + ", pissa"


def inject_pissa(model: nn.Module, cfg) -> list[str]:
    return inject_unsliced(model, cfg.targets, lambda m: PiSSALinear(m, cfg.r, cfg.alpha, cfg.dropout, cfg.scaling == "rs"),
                           "PiSSA")


METHODS = (Method("pissa", "LoRA's BA started on W0's top-r singular directions, the residual frozen (PiSSA)",
                  (*LORA_FIELDS, "train_also"), inject_pissa, check_lora),)  # no ΔW-vs-W0 analysis: its base is W_res
