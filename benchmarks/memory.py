"""Peak training memory with and without gradient checkpointing: LoRA (W_q, W_v, r=8) on the GPT-2 Medium
architecture (random weights, fp32, CPU), one process per setting.

    python -m benchmarks.memory [--batch 2 --seq 512 --steps 2 --tiny]   # -> results/bench/gradient_checkpointing.{json,md}
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _measure(gc: bool, batch: int, seq: int, steps: int, tiny: bool, out: str) -> None:
    import torch

    import lora
    from benchmarks.common import Settings, peak_rss_mb, reset_peak_rss, rss_mb
    from benchmarks.jobs import load

    s = Settings.for_mode(tiny)
    model = load("gpt2", s)
    lora.apply_method(model, lora.MethodConfig(name="lora", r=8, alpha=16, targets=["q", "v"]))
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    before, reset = rss_mb(), reset_peak_rss()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    Path(out).write_text(json.dumps({"gradient_checkpointing": gc, "peak_rss_mb": peak_rss_mb(),
                                     "rss_before_steps_mb": before, "peak_reset": reset,
                                     "s_per_step": (time.perf_counter() - t0) / steps, "loss": loss.item()}))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import machine, versions

    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny GPT-2 (checks the harness)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")  # a fresh process per setting: its peak RSS is its own
    rows = []
    for gc in (False, True):
        path = args.out / f".gc_{gc}.json"
        args.out.mkdir(parents=True, exist_ok=True)
        p = ctx.Process(target=_measure, args=(gc, args.batch, args.seq, args.steps, args.tiny, str(path)))
        p.start()
        p.join()
        if p.exitcode != 0 or not path.exists():
            print(f"gradient_checkpointing={gc}: the process exited with {p.exitcode}", file=sys.stderr)
            return 1
        rows.append(json.loads(path.read_text()))
        path.unlink()
    off, on = rows
    result = {"model": "tiny GPT-2" if args.tiny else "GPT-2 Medium architecture (355M, random weights)",
              "method": "LoRA r=8 on W_q, W_v, fp32, AdamW", "batch": args.batch, "seq": args.seq,
              "steps": args.steps, "runs": rows,
              "gc_over_plain_peak_mem": on["peak_rss_mb"] / off["peak_rss_mb"],
              "gc_over_plain_step_time": on["s_per_step"] / off["s_per_step"],
              "machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    name = "gradient_checkpointing_tiny" if args.tiny else "gradient_checkpointing"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(
        f"# Gradient checkpointing: peak memory of training ({result['model']})\n\n"
        f"{result['method']}, batch {args.batch} × {args.seq} tokens, {args.steps} steps, one process per setting "
        f"({result['machine'].get('cpu', '?')}, {result['date']}).\n\n"
        "| gradient checkpointing | peak RSS (MB) | RSS before the steps (MB) | s per step |\n|---|---:|---:|---:|\n"
        + "".join(f"| {'on' if r['gradient_checkpointing'] else 'off'} | {r['peak_rss_mb']:,.0f} | "
                  f"{r['rss_before_steps_mb']:,.0f} | {r['s_per_step']:.2f} |\n" for r in rows)
        + f"\non / off: peak memory {result['gc_over_plain_peak_mem']:.3f}, step time "
          f"{result['gc_over_plain_step_time']:.3f}.\n")
    print(json.dumps({k: result[k] for k in ("gc_over_plain_peak_mem", "gc_over_plain_step_time")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
