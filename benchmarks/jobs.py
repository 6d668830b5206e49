"""The measurements. Each job runs in a process of its own (see run.py) and returns a JSON-able dict.

    train_time   one model kind, every training configuration in one process, interleaved: step time, tokens/s, MFU
    train_mem    one training configuration per process: peak RSS while training
    latency      forward latency of base / LoRA merged / LoRA unmerged / Adapter^L / Adapter^H (paper Table 1)
    mixed        K adapters in one batch: lora.multi vs K separate forwards vs PEFT's adapter_names
    checkpoint   adapter file bytes vs the full model's
"""
from __future__ import annotations

import copy
import gc
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

import lora
from experiments.loop import build_optimizer
from lora.adapters import Adapter, inject_adapters, on_block_output
from lora.io import atomic_save_safetensors, save_adapter
from lora.layers import inject_lora
from lora.multi import attach_adapters
from lora.targets import blocks_of, find_targets

from benchmarks.common import (Settings, Swap, matmul_params, median, peak_rss_mb, reset_peak_rss, rss_mb, sgemm,
                               time_interleaved)

TRAIN_CONFIGS = ("full", "lora", "peft", "adapter_h")
LATENCY_VARIANTS = ("base", "lora_merged", "lora_unmerged", "adapter_l", "adapter_h")
KINDS = ("decoder", "encoder")


# ------------------------------------------------------------------------------------------------- models
def preload() -> None:
    """Import what the jobs use (transformers and peft import lazily), so forked job processes start warm."""
    import peft  # noqa: F401
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,  # noqa: F401
                              BertForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM)

    import experiments.models  # noqa: F401
    from peft import get_peft_model  # noqa: F401


def model_name(kind: str, s: Settings) -> str:
    names = {"decoder": ("smollm2", "tiny_llama"), "encoder": ("minilm", "tiny_bert"),
             "gpt2": ("gpt2_medium", "tiny_gpt2")}
    return names[kind][int(s.tiny)]


def load(kind: str, s: Settings) -> nn.Module:
    """The local decoder (SmolLM2-135M) or encoder (MiniLM-L6, 3-way head), or their tiny random stand-ins; GPT-2 M
    (or tiny GPT-2) built from its architecture with random weights. Seeded, so every load gives the same weights."""
    from experiments.models import load_model, model_config

    torch.manual_seed(0)
    cfg = model_config(model_name(kind, s))
    if kind == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        arch = dict(cfg.arch)
        arch.pop("model_type")
        return GPT2LMHeadModel(GPT2Config(**arch))
    model, _ = load_model(cfg, num_labels=3 if kind == "encoder" else None, with_tokenizer=False)
    return model


def lora_config(s: Settings, name: str = "lora") -> lora.MethodConfig:
    return lora.MethodConfig(name=name, r=s.r, alpha=s.alpha, dropout=s.dropout, targets=list(s.targets),
                             adapter_r=s.adapter_r)


def peft_config(model: nn.Module, s: Settings, dropout: float | None = None, head: bool = False):
    """PEFT's LoRA on exactly the modules our `targets` name (full module paths), same rank, alpha and dropout, and
    with `head` the same trained task head as ours (BERT's pooler and classifier)."""
    from peft import LoraConfig

    return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout if dropout is None else dropout,
                      target_modules=[t.path for t in find_targets(model, list(s.targets))],
                      modules_to_save=["classifier", "pooler"] if head else None)


def batch(kind: str, model: nn.Module, n: int, t: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (n, t), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "encoder":
        out["labels"] = torch.randint(0, 3, (n,), generator=g)
    else:
        out["labels"] = ids
    return out


def build_training(kind: str, config: str, s: Settings):
    """A model prepared for one training configuration, its optimizer step and its size facts."""
    model = load(kind, s)
    n_matmul = matmul_params(model)
    if config == "peft":
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(model, s, head=kind == "encoder"))
    elif config in ("full", "lora", "adapter_h"):
        lora.apply_method(model, lora_config(s, config))
    else:
        raise ValueError(f"unknown training configuration {config!r}; known: {', '.join(TRAIN_CONFIGS)}")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # the training loop's optimizer (fused AdamW), so full FT is measured as `experiments.train` runs it
    opt, _ = build_optimizer(model, SimpleNamespace(lr=s.lr, weight_decay=0.01, adam_eps=1e-8), total=1, warmup=0)
    n, t = (s.dec_batch, s.dec_seq) if kind == "decoder" else (s.enc_batch, s.enc_seq)
    data = batch(kind, model, n, t)

    def step():
        opt.zero_grad(set_to_none=True)
        model(**data).loss.backward()
        opt.step()

    trainable = sum(p.numel() for p in params)
    return model, step, {"trainable_params": trainable, "matmul_params": n_matmul, "tokens_per_step": n * t,
                         "batch": n, "seq": t}


# ------------------------------------------------------------------------------------------------- 1. training
def train_time(s: Settings, kind: str) -> dict:
    """Every configuration of `kind` in this one process, calls interleaved; MFU against an sgemm of the same run."""
    ref = sgemm(s.sgemm_n)
    steps, facts = {}, {}
    for config in TRAIN_CONFIGS:
        _, steps[config], facts[config] = build_training(kind, config, s)
    times = time_interleaved(steps, s.warmup, s.repeats)
    ref_after = sgemm(s.sgemm_n)
    peak = (ref["flops_per_s"] + ref_after["flops_per_s"]) / 2  # the sgemm before and after the steps, averaged
    out = {"model": model_name(kind, s), "sgemm": ref, "sgemm_after": ref_after, "configs": {}}
    for config in TRAIN_CONFIGS:
        f = facts[config]
        step_s = median(times[config])
        # a frozen base still costs forward (2N) + backward through activations (2N) per token; full FT adds the
        # weight gradients (2N more): the usual 4N / 6N, attention scores and the small adapter terms left out
        flop_per_token = (6 if config == "full" else 4) * f["matmul_params"]
        out["configs"][config] = f | {"step_s": step_s, "step_times_s": times[config],
                                      "tokens_per_s": f["tokens_per_step"] / step_s,
                                      "flop_per_token": flop_per_token,
                                      "mfu": flop_per_token * f["tokens_per_step"] / step_s / peak}
    return out


def train_mem(s: Settings, kind: str, config: str) -> dict:
    """Peak RSS of one configuration's training steps, measured in a process that built nothing else."""
    model, step, facts = build_training(kind, config, s)
    gc.collect()
    model_rss = rss_mb()
    reset = reset_peak_rss()  # the peak from here on: loading the weights may peak higher than training does
    for _ in range(s.warmup + s.mem_steps):
        step()
    peak = peak_rss_mb()
    return {"model": model_name(kind, s), "config": config, "peak_rss_mb": peak, "rss_after_build_mb": model_rss,
            "train_overhead_mb": peak - model_rss, "peak_reset": reset, **facts}


# ------------------------------------------------------------------------------------------------- 2. latency
def _randomise(modules, seed: int, std: float = 0.02) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for name, p in m.named_parameters():
                if name.startswith("lora_B") or name.startswith("adapter.up"):
                    p.copy_(torch.randn(p.shape, generator=g) * std)


class _BlockWithOutputAdapter(nn.Module):
    """Adapter^L as lora.adapters computes it (on the block output), as a wrapper so that Swap can swap it."""

    def __init__(self, block: nn.Module, adapter: Adapter):
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, *args, **kwargs):
        return on_block_output(self.adapter, self.block(*args, **kwargs))


def _wrap_block_outputs(model: nn.Module, r: int) -> None:
    blocks = blocks_of(model)
    d = model.get_input_embeddings().weight.shape[1]
    for i, block in enumerate(blocks):
        blocks[i] = _BlockWithOutputAdapter(block, Adapter(d, r, layer_norm=True))


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def latency(s: Settings) -> dict:
    """Forward latency (no KV cache) of each variant at each batch x sequence length, variants sharing one base."""
    model = load("gpt2", s).eval()
    swap = Swap(model)
    targets, r, alpha = list(s.targets), s.r, s.alpha
    unmerged = swap.capture("lora_unmerged", lambda m: inject_lora(m, targets, r=r, alpha=alpha, dropout=0.0))
    _randomise(unmerged.values(), seed=1)
    merged = swap.capture("lora_merged", lambda m: inject_lora(m, targets, r=r, alpha=alpha, dropout=0.0))
    for path, layer in merged.items():  # same A, B as the unmerged variant, folded into a copy of W0
        layer.base = copy.deepcopy(layer.base)
        layer.load_state_dict(unmerged[path].state_dict())
        layer.merge()
    _randomise(swap.capture("adapter_l", lambda m: _wrap_block_outputs(m, s.adapter_r)).values(), seed=2)
    _randomise(swap.capture("adapter_h", lambda m: inject_adapters(m, "h", r=s.adapter_r)).values(), seed=3)
    out = {"model": model_name("gpt2", s) + " (random weights)", "cells": []}
    with torch.inference_mode():
        check = batch("decoder", model, 2, 8)["input_ids"]
        logits = {}
        for v in ("lora_merged", "lora_unmerged"):
            swap.install(v)
            logits[v] = model(input_ids=check, use_cache=False).logits
        out["merged_vs_unmerged_max_rel_diff"] = _rel_diff(logits["lora_merged"], logits["lora_unmerged"])
        for n in s.lat_batches:
            for t in s.lat_seqs:
                ids = batch("decoder", model, n, t, seed=n * 1000 + t)["input_ids"]
                runs = {v: (lambda: model(input_ids=ids, use_cache=False)) for v in LATENCY_VARIANTS}
                prepare = {v: (lambda v=v: swap.install(None if v == "base" else v)) for v in LATENCY_VARIANTS}
                times = time_interleaved(runs, s.warmup, s.repeats, prepare)
                ms = {v: 1000 * median(times[v]) for v in LATENCY_VARIANTS}
                out["cells"].append({"batch": n, "seq": t, "median_ms": ms,
                                     "over_base": {v: ms[v] / ms["base"] for v in LATENCY_VARIANTS}})
    swap.restore()
    return out


# ------------------------------------------------------------------------------------------------- 3. many adapters
def mixed(s: Settings) -> dict:
    """A batch whose rows use K LoRA adapters: one lora.multi forward vs K forwards (one per adapter, its rows only,
    LoRALinear wrappers around the same base) vs PEFT's mixed batch (adapter_names). Measured twice: a forward over
    the whole sequence (no KV cache), and greedy generation with a KV cache (one generate call vs K)."""
    from peft import get_peft_model

    model = load("decoder", s).eval()
    k = s.adapters
    names = [f"a{i}" for i in range(k)]
    targets, r, alpha = list(s.targets), s.r, s.alpha
    swap = Swap(model)
    states = {}
    for i, name in enumerate(names):
        wrappers = swap.capture(name, lambda m: inject_lora(m, targets, r=r, alpha=alpha, dropout=0.0))
        _randomise(wrappers.values(), seed=10 + i)
        states[name] = {f"{p}.{n}": t.detach() for p, w in wrappers.items() for n, t in w.named_parameters()
                        if n.startswith("lora_")}
    banks = []
    swap.capture("mixed", lambda m: banks.append(attach_adapters(m, states, alpha=alpha)))
    bank = banks[0]
    rows = [names[i % k] for i in range(s.mixed_rows)]
    bank.set(rows)
    peft_model = get_peft_model(copy.deepcopy(model), peft_config(model, s, dropout=0.0), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, peft_config(model, s, dropout=0.0))
    with torch.no_grad():
        for name in names:
            for key, t in states[name].items():
                path, _, param = key.rpartition(".")
                layer = peft_model.base_model.model.get_submodule(path)
                getattr(layer, param)[name].weight.copy_(t)  # PEFT's lora_A / lora_B are ModuleDicts by adapter
    peft_model.eval()
    ids = batch("decoder", model, s.mixed_rows, s.mixed_seq, seed=7)["input_ids"]
    groups = {name: torch.tensor([i for i, row in enumerate(rows) if row == name]) for name in names}

    def sequential():
        outs = []
        for name in names:
            swap.install(name)
            outs.append(model(input_ids=ids[groups[name]], use_cache=False).logits)
        return outs

    runs = {"mixed": lambda: model(input_ids=ids, use_cache=False).logits,
            "sequential": sequential,
            "peft": lambda: peft_model(input_ids=ids, adapter_names=rows, use_cache=False).logits}
    prepare = {"mixed": lambda: swap.install("mixed"), "sequential": lambda: None, "peft": lambda: swap.restore()}

    # the same three paths generating: greedy, a KV cache, exactly gen_new_tokens new tokens per row
    prompt = ids[:, :s.gen_prompt]
    gen = dict(max_new_tokens=s.gen_new_tokens, min_new_tokens=s.gen_new_tokens, do_sample=False, num_beams=1,
               pad_token_id=0)

    def generate_sequential():
        outs = []
        for name in names:
            swap.install(name)
            own = prompt[groups[name]]
            outs.append(model.generate(own, attention_mask=torch.ones_like(own), **gen))
        return outs

    generate_runs = {"mixed": lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **gen),
                     "sequential": generate_sequential,
                     "peft": lambda: peft_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                                         adapter_names=rows, **gen)}

    def outputs(paths):
        """One call of each path; the K-call path's parts put back in row order."""
        prepare["mixed"]()
        mine = paths["mixed"]()
        ordered = torch.empty_like(mine)
        for name, part in zip(names, paths["sequential"]()):
            ordered[groups[name]] = part
        swap.restore()
        return mine, ordered, paths["peft"]()

    with torch.inference_mode():
        got, seq, theirs = outputs(runs)
        check = {"mixed_vs_sequential_max_rel_diff": _rel_diff(got, seq),
                 "mixed_vs_peft_max_rel_diff": _rel_diff(got, theirs)}
        times = time_interleaved(runs, s.warmup, s.repeats, prepare)
        got, seq, theirs = outputs(generate_runs)
        # greedy tokens of two float paths may part where two logits tie to rounding: a share, not an equality
        check["generate_mixed_vs_sequential_equal_tokens"] = (got == seq).float().mean().item()
        check["generate_mixed_vs_peft_equal_tokens"] = (got == theirs).float().mean().item()
        generate_times = time_interleaved(generate_runs, s.warmup, s.repeats, prepare)
    swap.restore()
    out = {"model": model_name("decoder", s), "adapters": k, "rows": s.mixed_rows, "seq": s.mixed_seq,
           "gen_prompt": s.gen_prompt, "gen_new_tokens": s.gen_new_tokens, **check, "paths": {}, "generate": {}}
    for name in runs:
        sec = median(times[name])
        out["paths"][name] = {"median_s": sec, "times_s": times[name], "rows_per_s": s.mixed_rows / sec}
        sec = median(generate_times[name])
        out["generate"][name] = {"median_s": sec, "times_s": generate_times[name],
                                 "new_tokens_per_s": s.mixed_rows * s.gen_new_tokens / sec}
    return out


# ------------------------------------------------------------------------------------------------- 4. checkpoints
def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def checkpoint(s: Settings) -> dict:
    """Bytes of `lora.io.save_adapter` (LoRA, plus the new task head for the encoder) vs the full model's
    safetensors (save_pretrained, fp32), per model."""
    out = {}
    for kind in ("decoder", "encoder", "gpt2"):
        model = load(kind, s)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model.save_pretrained(tmp / "full", safe_serialization=True)
            full = _bytes(tmp / "full")
            lora.apply_method(model, lora_config(s))
            save_adapter(model, tmp / "adapter.safetensors")
            lora_only = {n: p for n, p in model.named_parameters() if "lora_" in n}
            atomic_save_safetensors(lora_only, tmp / "lora.safetensors")
            adapter = (tmp / "adapter.safetensors").stat().st_size
            only = (tmp / "lora.safetensors").stat().st_size
        out[model_name(kind, s)] = {"full_bytes": full, "adapter_bytes": adapter, "lora_only_bytes": only,
                                    "adapter_over_full": adapter / full, "lora_params": sum(
                                        p.numel() for p in lora_only.values())}
        del model
        gc.collect()
    return out


JOBS = {"train_time": train_time, "train_mem": train_mem, "latency": latency, "mixed": mixed,
        "checkpoint": checkpoint}
