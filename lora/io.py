"""Adapter-only checkpoints (safetensors, never pickle) and export of a LoRA adapter in PEFT's on-disk format."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lora.layers import lora_modules


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a ValueError that names it."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); delete it and re-run to rebuild it") from e


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save only the trainable parameters (the adapter and the task head), with JSON-able metadata."""
    meta = {"format": "pt"} | {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_save_safetensors(trainable_state(model), path, metadata=meta)


def load_adapter(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Load parameters saved by `save_adapter` into a model that had the same method applied."""
    saved = read_safetensors(path)
    own = dict(model.named_parameters())
    missing = sorted(set(trainable_state(model)) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}; was it saved from the "
                         "same model and method configuration?")
    with torch.no_grad():
        for name, tensor in saved.items():
            if name not in own:
                continue
            if own[name].shape != tensor.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects "
                                 f"{tuple(own[name].shape)} (different rank or model size?)")
            own[name].copy_(tensor)


def export_peft(model: nn.Module, out_dir: str | os.PathLike, base_model_name_or_path: str) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` that `peft.PeftModel.from_pretrained` loads."""
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model carries no LoRA layers; apply method=lora before exporting to PEFT")
    tensors, ranks, alphas, dropouts, leaf_names = {}, set(), set(), set(), set()
    for path, m in modules.items():
        if list(m.slices) != [""]:
            raise ValueError(f"{path} adapts slices {list(m.slices)} of a fused projection; PEFT can only adapt the "
                             "whole module, so this adapter has no PEFT equivalent")
        if m.merged:
            raise ValueError(f"{path} is merged; unmerge the model before exporting the adapter")
        a, b = m.pair("")
        tensors[f"base_model.model.{path}.lora_A.weight"] = a
        tensors[f"base_model.model.{path}.lora_B.weight"] = b
        ranks.add(m.r)
        alphas.add(m.alpha)
        dropouts.add(m.dropout.p if isinstance(m.dropout, nn.Dropout) else 0.0)
        leaf_names.add(path.rsplit(".", 1)[-1])
    if len(ranks) > 1 or len(alphas) > 1:
        raise ValueError("PEFT export supports one rank and alpha for all modules")
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "r": ranks.pop(), "lora_alpha": alphas.pop(), "lora_dropout": max(dropouts),
        "target_modules": sorted(leaf_names), "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "modules_to_save": None,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    tmp = out / ".adapter_config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, out / "adapter_config.json")
    return out
