"""Seconds per LoRA training step and per generated example on E2E (SmolLM2-135M by default), by beam size; and
what decoding with the prompt run once per prompt (experiments.generate.prompt_cache) saves.

    python -m benchmarks.generation bench --beams 1,4,10 --threads 2      # last line JSON
    python -m benchmarks.generation prompt-cache --threads 1 --out results/bench/raw/prompt_cache.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import lora
from benchmarks.common import machine
from experiments import data, loop
from experiments.generate import _merge_lora, forward_loss, generate, stop_token_ids
from experiments.schemas import GenerationConfig
from experiments.models import load_model, model_config
from experiments.tasks import generation as G
from lora.config import MethodConfig


def _trained_lora(model_name: str, steps: int, batch_size: int, r: int, lr: float):
    """(model, tokenizer, seconds per step): LoRA (r on Wq/Wv, alpha 32) after `steps` E2E training steps."""
    torch.manual_seed(0)
    model, tok = load_model(model_config(model_name))
    lora.apply_method(model, MethodConfig(name="lora", r=r, alpha=32, dropout=0.1, targets=["q", "v"]))
    train, _ = G.load_e2e_split("train")
    enc = data.encode_lm(data.cap(train, 2000, 1234), tok, 512, "\n")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    order, times = loop.Order(len(enc), batch_size, 0), []
    model.train()
    for s in range(steps):
        t = time.perf_counter()
        loss = forward_loss(model, data.collate_lm(enc, order.batch(s), tok.pad_token_id), 0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        print(f"step {s + 1}: loss {loss.item():.3f}, {times[-1]:.2f} s", flush=True)
    return model, tok, times


def _test_prompts(tok, n_inputs: int) -> list[list[int]]:
    test, _ = G.load_e2e_split("test")
    inputs = G.stratified_inputs(G.group_references(test), n_inputs, G.EVAL_SUBSET_SEED)
    return [data.prompt_ids(tok, g.source, "\n") for g in inputs]


def prompt_cache(model_name: str = "smollm2", steps: int = 20, n_inputs: int = 32, batch_sizes: Sequence[int] = (8, 16),
                 beams: int = 4, repeats: int = 2, threads: int = 0) -> dict:
    """Seconds per generated E2E MR with the prompt run once per prompt (generate.prompt_cache) against once per
    beam (HF's own beam search), at each decoding batch size, interleaved `repeats` times (a load on the machine
    falls on both); and whether every configuration decodes the same texts. LoRA trained `steps` steps first."""
    from experiments import generate as gen_mod

    threads = loop.set_threads(threads)
    model, tok, _ = _trained_lora(model_name, steps, 8, 4, 1e-3)
    prompts, stops = _test_prompts(tok, n_inputs), stop_token_ids(tok)
    _merge_lora(model)
    cached_fn, seconds, texts = gen_mod.prompt_cache, {}, {}
    try:
        for _ in range(repeats):
            for bs in batch_sizes:
                for cached in (True, False):
                    gen_mod.prompt_cache = cached_fn if cached else (lambda *args: None)
                    gen = GenerationConfig(num_beams=beams, length_penalty=0.9, no_repeat_ngram_size=4,
                                           max_new_tokens=64, batch_size=bs)
                    t = time.perf_counter()
                    texts[(bs, cached)] = generate(model, tok, prompts, gen, tok.pad_token_id, stops)
                    seconds.setdefault((bs, cached), []).append((time.perf_counter() - t) / len(prompts))
    finally:
        gen_mod.prompt_cache = cached_fn
    reference = texts[(batch_sizes[0], False)]
    rows = [{"batch_size": bs, "prompt_cache": cached, "s_per_mr": min(v), "s_per_mr_all": v,
             "same_texts": texts[(bs, cached)] == reference} for (bs, cached), v in seconds.items()]
    return {"model": model_name, "threads": threads, "beams": beams, "inputs": len(prompts), "train_steps": steps,
            "machine": machine(), "rows": rows}


def bench(model_name: str = "smollm2", steps: int = 20, batch_size: int = 8, r: int = 4, beams: Sequence[int] = (1, 4, 10),
          n_inputs: int = 8, lr: float = 1e-3, threads: int = 0) -> dict:
    """Seconds per LoRA training step (E2E, batch `batch_size`, r on Wq/Wv, alpha 32) and seconds per generated
    example for each beam size (a batch of `n_inputs` E2E test MRs, after the short training). Needs the data."""

    threads = loop.set_threads(threads)
    model, tok, times = _trained_lora(model_name, steps, batch_size, r, lr)
    warm = times[2:] or times
    result = {"model": model_name, "threads": threads, "batch_size": batch_size, "r": r,
              "s_per_step": sum(warm) / len(warm), "s_per_generated_example": {}}
    prompts, stops = _test_prompts(tok, n_inputs), stop_token_ids(tok)
    _merge_lora(model)
    for b in beams:
        gen = GenerationConfig(num_beams=b, length_penalty=0.9, no_repeat_ngram_size=4, max_new_tokens=64,
                               batch_size=n_inputs)
        t = time.perf_counter()
        hyps = generate(model, tok, prompts, gen, tok.pad_token_id, stops)
        result["s_per_generated_example"][b] = (time.perf_counter() - t) / len(prompts)
        print(f"beam {b}: {result['s_per_generated_example'][b]:.2f} s per example; e.g. {hyps[0]!r}", flush=True)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.generation", description="bench: " + bench.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="s per LoRA step and per generated example on E2E")
    b.add_argument("--model", default="smollm2")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--r", type=int, default=4)
    b.add_argument("--beams", default="1,4,10")
    b.add_argument("--inputs", type=int, default=8)
    b.add_argument("--threads", type=int, default=0)
    c = sub.add_parser("prompt-cache", help="s per generated E2E MR with and without generate.prompt_cache")
    c.add_argument("--model", default="smollm2")
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--inputs", type=int, default=32)
    c.add_argument("--batch-sizes", default="8,16")
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.command == "bench":
        out = bench(args.model, args.steps, args.batch_size, args.r, [int(x) for x in args.beams.split(",")],
                    args.inputs, threads=args.threads)
    else:
        out = prompt_cache(args.model, args.steps, args.inputs, [int(x) for x in args.batch_sizes.split(",")],
                           repeats=args.repeats, threads=args.threads)
    print(json.dumps(out))
    if getattr(args, "out", None):
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
