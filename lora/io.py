"""Adapter-only checkpoints (safetensors, never pickle) and export of a LoRA adapter in PEFT's on-disk format."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lora.count import has_component
from lora.layers import LoRALinear, lora_modules


def temp_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temp file next to `path` for an atomic write, with the mode an ordinary file gets under
    the process umask (mkstemp makes it 0600, unreadable to the others on a shared cluster)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    return fd, tmp


def file_mode() -> int:
    """The mode open() gives a new file under the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, file_mode())  # safetensors writes a file of its own in place of the temp one
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_exists(path: str | os.PathLike) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no adapter file at {path}; check the run directory (is the run finished?)")


def read_safetensors(path: str | os.PathLike, fix: str = "delete it and re-run to rebuild it"
                     ) -> dict[str, torch.Tensor]:
    """Load a safetensors file: FileNotFoundError if missing, a ValueError naming it (and `fix`) if truncated or
    corrupt."""
    _check_exists(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): truncated or corrupt; {fix}") from e


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save only the trainable parameters (the adapter and the task head); each metadata value is stored as JSON."""
    meta = {"format": "pt"} | {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_save_safetensors(trainable_state(model), path, metadata=meta)


def adapter_metadata(path: str | os.PathLike) -> dict:
    """The metadata `save_adapter` stored, JSON values decoded (the safetensors "format" entry left out)."""
    _check_exists(path)
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    return {k: json.loads(v) for k, v in raw.items() if k != "format"}


def _listed(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" … ({len(names) - limit} more)" if len(names) > limit else "") or "none"


# a finished run is skipped while its final.json says success, so deleting the adapter alone rebuilds nothing
_REBUILD_ADAPTER = ("copy it again from where it came from, or retrain it: delete the run directory's final.json and "
                    "adapter.safetensors, then re-run the same command")


def _origin(path: str | os.PathLike, saved: dict[str, torch.Tensor]) -> str:
    """Where an adapter file that does not fit came from, as far as the file says: " (...)" or ""."""
    if saved and all(k.startswith("base_model.model.") for k in saved):
        return (" (it is a PEFT export, keys base_model.model.*: load it with peft.PeftModel.from_pretrained on its "
                "base model, or load the run's own adapter.safetensors)")
    try:
        meta = adapter_metadata(path)
    except ValueError:
        meta = {}
    said = ", ".join(f"{k}={meta[k]}" for k in ("model", "method", "r", "alpha", "task") if k in meta)
    return f" (it was saved from {said})" if said else ""


def load_adapter(model: nn.Module, path: str | os.PathLike, strict: bool = True, skip: Sequence[str] = ()) -> None:
    """Load parameters saved by `save_adapter` into a model that had the same method applied.

    strict: the file must hold exactly the model's trainable parameters. Not strict: load the keys the model has and
    ignore the rest. skip: modules (as `train_also` names them, e.g. the task head) whose saved tensors are left out.
    Shapes must match either way; nothing is copied unless every check passes.
    """
    saved = {k: v for k, v in read_safetensors(path, fix=_REBUILD_ADAPTER).items()
             if not any(has_component(k, s) for s in skip)}
    merged = [name for name, m in lora_modules(model).items() if m.merged]
    if merged:
        raise ValueError(f"LoRA layers {_listed(merged)} are merged, so loading new A, B would leave a stale ΔW in "
                         "the base weights; call lora.layers.unmerge_lora(model) first")
    own = dict(model.named_parameters())
    trainable = trainable_state(model)
    missing = sorted(set(trainable) - set(saved))
    unexpected = sorted(set(saved) - set(trainable if strict else own))
    if strict and (missing or unexpected):
        raise ValueError(f"{path} does not fit this model{_origin(path, saved)}: missing {_listed(missing)}; "
                         f"unexpected {_listed(unexpected)}. Load it into the model and method configuration "
                         "(model, method, r, targets) it was trained with; strict=False loads the keys that do fit")
    mismatched = [f"{name} {tuple(t.shape)} vs model {tuple(own[name].shape)}"
                  for name, t in saved.items() if name in own and own[name].shape != t.shape]
    if mismatched:
        raise ValueError(f"{path}: shapes differ from the model's (different rank or model size?)"
                         f"{_origin(path, saved)}: {_listed(mismatched)}")
    with torch.no_grad():
        for name, tensor in saved.items():
            if name in own:
                own[name].copy_(tensor)


def _peft_lora_pair(m: LoRALinear) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(A, B, rank, alpha) of one layer as PEFT sees it: one LoRA on the whole module.

    A per-slice layer becomes an exact rank k·r LoRA: A = [A_1; …; A_k] (k·r × in) and B (out × k·r) with B_i in
    slice i's rows and columns, zero elsewhere, so unadapted slices (GPT-2's k) get exactly zero update; alpha
    becomes k·alpha to keep the scaling alpha / r. PEFT trains that B as a dense matrix: the structure holds for
    inference, not for further training in PEFT.
    """
    if hasattr(m, "peft_pair"):  # a variant with its own equivalent plain LoRA (PiSSA)
        return m.peft_pair()
    if list(m.slices) == [""]:
        a, b = m.pair("")
        return a.detach(), b.detach(), m.r, m.alpha
    roles = sorted(m.slices, key=lambda role: m.slices[role][0])
    k = len(roles)
    a_full = torch.cat([m.pair(role)[0].detach() for role in roles])  # (k·r, in)
    b_full = a_full.new_zeros(m.out_features, k * m.r)
    for i, role in enumerate(roles):
        start, end = m.slices[role]
        b_full[start:end, i * m.r:(i + 1) * m.r] = m.pair(role)[1].detach()
    # the scaling alpha / r (rsLoRA: alpha / sqrt(r)) of rank k·r stays the slice's
    return a_full, b_full, k * m.r, (math.sqrt(k) if m.rank_stabilised else k) * m.alpha


def _modules_to_save(model: nn.Module) -> dict[str, nn.Module]:
    """Modules owning the trainable parameters besides LoRA's (the task head), by path; PEFT saves them whole."""
    lora_params = {id(p) for m in lora_modules(model).values() for p in m.parameters()}
    owners: dict[str, nn.Module] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in lora_params:
            path = name.rpartition(".")[0]
            owners[path] = model.get_submodule(path)
    foreign = [f"{path} ({type(m).__name__})" for path, m in owners.items()
               if not type(m).__module__.startswith(("torch.", "transformers."))]
    if foreign:
        raise ValueError(f"trainable modules {_listed(foreign)} are not part of the base model (adapters or prefixes "
                         "of another method), and PEFT's LoRA format cannot carry them; export plain method=lora runs")
    return owners


def export_peft(model: nn.Module, out_dir: str | os.PathLike, base_model_name_or_path: str) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` that `peft.PeftModel.from_pretrained` loads.

    `PeftModel.from_pretrained(base, out_dir)` on the unadapted base model then gives our adapted model's outputs.
    The trained task head (any trainable non-LoRA module of the base model) goes into `modules_to_save`.
    """
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model carries no LoRA layers; apply method=lora before exporting to PEFT")
    merged = [path for path, m in modules.items() if m.merged]
    if merged:
        raise ValueError(f"LoRA layers {_listed(merged)} are merged; call lora.layers.unmerge_lora(model) before "
                         "exporting the adapter")
    tensors: dict[str, torch.Tensor] = {}
    shape: dict[str, tuple[int, float]] = {}
    for path, m in modules.items():
        a, b, rank, alpha = _peft_lora_pair(m)
        tensors[f"base_model.model.{path}.lora_A.weight"] = a
        tensors[f"base_model.model.{path}.lora_B.weight"] = b
        if hasattr(m, "lora_magnitude"):  # DoRA (lora/dora.py)
            tensors[f"base_model.model.{path}.lora_magnitude_vector.weight"] = m.lora_magnitude.detach()
        shape[path] = (rank, alpha)
    rs = {m.rank_stabilised for m in modules.values()}
    if len(rs) > 1:
        raise ValueError("PEFT has one use_rslora for all layers; this model mixes alpha / r and alpha / sqrt(r)")
    dora = {hasattr(m, "lora_magnitude") for m in modules.values()}
    if len(dora) > 1:
        raise ValueError("PEFT has one use_dora for all layers; this model mixes LoRA and DoRA layers")
    dropouts = {m.dropout_p for m in modules.values()}
    if len(dropouts) > 1:
        raise ValueError(f"PEFT has one lora_dropout for all layers; this model mixes {sorted(dropouts)}")
    to_save = _modules_to_save(model)
    for path, m in to_save.items():
        tensors |= {f"base_model.model.{path}.{k}": v for k, v in m.state_dict().items()}
    # The most common (rank, alpha) is PEFT's default; layers that differ (fused slices) go in the patterns, keyed by
    # full module path, which PEFT matches as a regex anchored at a dot boundary.
    default = max(set(shape.values()), key=list(shape.values()).count)
    others = {path: ra for path, ra in shape.items() if ra != default}
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "r": default[0], "lora_alpha": default[1], "lora_dropout": dropouts.pop(),
        "rank_pattern": {path: ra[0] for path, ra in others.items()},
        "alpha_pattern": {path: ra[1] for path, ra in others.items()},
        # full paths, not leaf names: PEFT matches a list entry by suffix, and a leaf like BERT's "dense" would also
        # catch modules we never adapted (the pooler)
        "target_modules": sorted(modules),
        "fan_in_fan_out": all(m.fan_in_fan_out for m in modules.values()),  # PEFT fixes it per layer type anyway
        "bias": "none", "inference_mode": True, "init_lora_weights": True, "use_rslora": rs.pop(), "use_dora": dora.pop(),
        "modules_to_save": sorted(to_save) or None,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    _atomic_write_text(json.dumps(config, indent=2), out / "adapter_config.json")
    return out
