"""Seconds per LoRA training step and per generated example on E2E (SmolLM2-135M by default), by beam size.

    python -m benchmarks.generation bench --beams 1,4,10 --threads 2      # last line JSON
"""
from __future__ import annotations

import json
import time
from typing import Optional, Sequence

import torch

import lora
from experiments import data, loop
from experiments.generate import _merge_lora, forward_loss, generate, stop_token_ids
from experiments.schemas import GenerationConfig
from experiments.models import load_model, model_config
from experiments.tasks import generation as G
from lora.config import MethodConfig


def bench(model_name: str = "smollm2", steps: int = 20, batch_size: int = 8, r: int = 4, beams: Sequence[int] = (1, 4, 10),
          n_inputs: int = 8, lr: float = 1e-3, threads: int = 0) -> dict:
    """Seconds per LoRA training step (E2E, batch `batch_size`, r on Wq/Wv, alpha 32) and seconds per generated
    example for each beam size (a batch of `n_inputs` E2E test MRs, after the short training). Needs the data."""

    threads = loop.set_threads(threads)
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
    warm = times[2:] or times
    result = {"model": model_name, "threads": threads, "batch_size": batch_size, "r": r,
              "s_per_step": sum(warm) / len(warm), "s_per_generated_example": {}}
    test, _ = G.load_e2e_split("test")
    inputs = G.stratified_inputs(G.group_references(test), n_inputs, G.EVAL_SUBSET_SEED)
    prompts = [data.prompt_ids(tok, g.source, "\n") for g in inputs]
    stops = stop_token_ids(tok)
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
    args = ap.parse_args(argv)
    out = bench(args.model, args.steps, args.batch_size, args.r, [int(x) for x in args.beams.split(",")],
                args.inputs, threads=args.threads)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
