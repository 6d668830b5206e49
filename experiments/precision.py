"""Mixed precision for training: `train.precision=fp32|bf16|fp16|auto`, `train.tf32`, `train.gradient_checkpointing`.

Master weights, LoRA/adapter parameters and the optimizer state stay fp32; autocast runs the forward in bf16/fp16
(matmuls, attention) and keeps the reductions it lists in fp32. fp16 adds a gradient scaler (its state is part of the
checkpoint). `auto` is fp32 on the CPU, and bf16 on a GPU that supports it at the paper scale.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(name: str, device: torch.device, scale: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"train.precision={name!r}; known: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return "bf16" if bf16_gpu and scale == "paper" else "fp32"


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16, resolved
    device_type: str
    scaler: Optional[torch.amp.GradScaler] = None

    def autocast(self):
        dtype = DTYPES[self.name]
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params, max_grad_norm: float) -> None:
        """Clip (on unscaled gradients) and step; an fp16 step with inf/NaN gradients is skipped by the scaler."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def setup(train_cfg, device: torch.device, scale: str) -> Precision:
    name = resolve(train_cfg.precision, device, scale)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(train_cfg.tf32)  # fp32 matmuls on tensor cores (Ampere+)
        torch.backends.cudnn.allow_tf32 = bool(train_cfg.tf32)
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Precision(name, device.type, scaler)
