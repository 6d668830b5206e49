"""Trainable and total parameters of any model x method, built on the meta device (no weights, no memory).

    python -m experiments.count model=gpt3_175b method=lora method.r=8 method.targets=[q,v]
    python -m experiments.count model=roberta_base method=adapter_h method.adapter_r=8 num_labels=3

Composes conf/model and conf/method with Hydra (a small primary config of its own, so it does not depend on
conf/config.yaml) and prints a summary; the LAST line is JSON: trainable (task head included), total, and method
(trainable minus the task head: the paper's "# Trainable Parameters" convention).
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf

from experiments import schemas
from experiments.models import load_model
from experiments.schemas import ModelConfig
from lora import MethodConfig, apply_method, count_parameters
from lora.methods import get as method_of

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "method")


@dataclass
class CountConfig:
    defaults: list[Any] = field(default_factory=lambda: [{"model": MISSING}, {"method": "lora"}, "_self_"])
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    num_labels: Optional[int] = None  # encoders: size of the new classification head (None: transformers' 2)


def _register() -> None:
    schemas.register()
    ConfigStore.instance().store(name="count_config", node=CountConfig)


def known(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed {model, method, num_labels} config; a wrong group option names the known ones."""
    _register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="count"):
        try:
            return compose(config_name="count_config", overrides=list(overrides))
        except (MissingConfigException, ConfigCompositionException) as e:
            for group in GROUPS:
                if f"'{group}/" in str(e) or f"'{group}'" in str(e):
                    raise ValueError(f"{_first_line(e)}\nknown {group} configs: {', '.join(known(group))}") from None
            raise


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def count(model: str | ModelConfig, method: str | MethodConfig = "lora", overrides: list[str] | tuple[str, ...] = (),
          num_labels: int | None = None) -> dict:
    """Count in-process. `model`/`method` are config names (composed with `overrides`) or ready configs."""
    args = list(overrides)
    if isinstance(model, str):
        args.insert(0, f"model={model}")
    if isinstance(method, str):
        args.insert(1 if isinstance(model, str) else 0, f"method={method}")
    if args:
        cfg = compose_config(args)
        model = model if isinstance(model, ModelConfig) else OmegaConf.to_object(cfg.model)
        method = method if isinstance(method, MethodConfig) else OmegaConf.to_object(cfg.method)
        num_labels = cfg.num_labels if num_labels is None else num_labels
    return count_configs(model, method, num_labels=num_labels)


def count_configs(model_cfg: ModelConfig, method_cfg: MethodConfig, num_labels: int | None = None,
                  base: nn.Module | None = None) -> dict:
    """Count `method_cfg` applied to `model_cfg` on the meta device; `base`, when given, is that model already
    built (meta) and is adapted in place."""
    method_cfg.validate()
    model = base if base is not None else meta_model(model_cfg, num_labels)
    with torch.device("meta"):  # the method's new parameters too: LoRA r=64 on GPT-3 would be 2.4 GB on the CPU
        apply_method(model, method_cfg)
    c = count_parameters(model, exclude=method_cfg.train_also)
    return {"model": model_cfg.name, "method_name": method_cfg.name,
            "trainable": c.trainable, "total": c.total, "method": c.method}


_META: dict[str, nn.Module] = {}  # built meta models by config: building GPT-3's 96 blocks takes ~4 s, copying 0.1 s


def meta_model(model_cfg: ModelConfig, num_labels: int | None = None) -> nn.Module:
    """A fresh copy of `model_cfg` built on the meta device (no memory); built once per config and process."""
    key = json.dumps([OmegaConf.to_container(OmegaConf.structured(model_cfg)), num_labels], sort_keys=True)
    if key not in _META:
        _META[key] = load_model(model_cfg, num_labels=num_labels, device="meta")[0]
    return copy.deepcopy(_META[key])


def hyperparameters(m: MethodConfig) -> str:
    """The hyperparameters that matter for method `m`, e.g. 'r=8 alpha=8 dropout=0 targets=[q,v]'."""
    def text(v) -> str:
        return f"[{','.join(map(str, v))}]" if isinstance(v, (list, tuple)) else f"{v:g}" if isinstance(v, float) \
            else str(v)
    return " ".join(f"{f}={text(getattr(m, f))}" for f in method_of(m.name).fields if f != "train_also")


def summary(model_cfg: ModelConfig, method_cfg: MethodConfig, result: dict) -> str:
    t, n, meth = result["trainable"], result["total"], result["method"]
    return "\n".join([
        f"model   {model_cfg.name} ({model_cfg.family}, {model_cfg.kind}, source {model_cfg.source}; built on meta)",
        f"method  {method_cfg.name} {hyperparameters(method_cfg)}".rstrip(),
        f"method parameters (head excluded) {meth:>15,}  ({meth / 1e6:.2f}M)",
        f"trainable (head included)         {t:>15,}  ({t / 1e6:.2f}M, {100 * t / max(n, 1):.4f}% of total)",
        f"total                             {n:>15,}  ({n / 1e6:.2f}M)",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print(f"models:  {', '.join(known('model'))}\nmethods: {', '.join(known('method'))}")
        return 0
    try:
        cfg = compose_config(argv)
        model_cfg: ModelConfig = OmegaConf.to_object(cfg.model)
        method_cfg: MethodConfig = OmegaConf.to_object(cfg.method)
        result = count_configs(model_cfg, method_cfg, num_labels=cfg.num_labels)
    except (ValueError, ConfigCompositionException) as e:  # bad names, keys or values: the message says which
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        print(f"error: {e}{cause}", file=sys.stderr)
        return 2
    print(summary(model_cfg, method_cfg, result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
