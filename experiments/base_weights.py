"""The frozen weights W0 under a LoRA run's adapters, written beside them as `base_weights.safetensors`.

ΔW versus W (the paper's Table 7, Figure 8 and the amplification factor of H.4) needs W0 of every adapted matrix;
the adapter file holds only A and B. The runner writes this file at the end of every LoRA run; for runs made before
it did (their config is in `.hydra/config.yaml`), write it afterwards:

    python -m experiments.base_weights results/runs/local/table15/row=lora_qv_r64,seed=0 [more run dirs ...]
    python -m experiments.base_weights --missing results/runs/local   # every committed adapter without its W0

The repository commits the LoRA adapters the subspace analysis reads, never this file (7–12 MB a run): `make
figures` rebuilds it from the package model with `--missing`.

Keys are `<module>.weight` in the model's own layout (nn.Linear out × in, GPT-2's Conv1D in × out), as
analysis/subspace.py reads them. About 1 MB per adapted 384 × 384 matrix in float32 (MiniLM: 12 MB for q, v).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from lora.methods import get as method_of

FILE = "base_weights.safetensors"


def base_weights(model: nn.Module) -> dict:
    """`<module>.weight` -> W0 of every LoRA layer's base projection (unmerged: W0 itself, not W0 + BA)."""
    from lora.layers import lora_modules

    out = {}
    for name, m in lora_modules(model).items():
        if m.merged:
            raise ValueError(f"{name} is merged: W0 + BA is not the base weight; unmerge first")
        out[f"{name}.weight"] = m.base.weight.detach()
    return out


def save(model: nn.Module, run_dir: str | Path) -> Path:
    from lora.io import atomic_save_safetensors

    path = Path(run_dir) / FILE
    atomic_save_safetensors(base_weights(model), path)
    return path


def write_for_run(run_dir: str | Path) -> Path:
    """Rebuild a finished LoRA run's model from its saved config (weights from the model files, not the adapter)
    and write its base weights."""
    import torch

    import lora
    from experiments import schemas
    from experiments.models import load_model

    run_dir = Path(run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {run_dir} is not a run directory written by experiments.train")
    cfg = OmegaConf.merge(OmegaConf.structured(schemas.Config), OmegaConf.load(config))
    obj = OmegaConf.to_object(cfg)
    if not method_of(obj.method.name).has_delta_w:
        raise ValueError(f"{run_dir} ran method {obj.method.name!r}: only LoRA runs have base weights under adapters")
    torch.manual_seed(obj.seed)  # a random-init (smoke) model is rebuilt as the run built it; the head comes last
    model, _ = load_model(obj.model, with_tokenizer=False)
    lora.apply_method(model, obj.method)
    return save(model, run_dir)


def missing(root: Path) -> list[Path]:
    """Finished LoRA runs under `root` (real directories, not links to them) with an adapter and no base weights."""
    out = []
    for adapter in sorted(Path(root).rglob("adapter.safetensors")):
        run = adapter.parent
        if run.is_symlink() or (run / FILE).exists() or not (run / "final.json").exists():
            continue
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        if method_of(str(OmegaConf.select(config, "method.name"))).has_delta_w:
            out.append(run)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path)
    parser.add_argument("--missing", type=Path, metavar="DIR",
                        help="also every finished LoRA run under DIR whose adapter has no base weights beside it")
    args = parser.parse_args(argv)
    if not args.run_dirs and args.missing is None:
        parser.error("give run directories or --missing DIR")
    if args.missing is not None and not args.missing.is_dir():
        parser.error(f"{args.missing} is not a folder (the run directories are under results/runs/<scale>)")
    for d in [*args.run_dirs, *(missing(args.missing) if args.missing is not None else [])]:
        print(write_for_run(d), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
