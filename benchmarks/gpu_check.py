"""The prepared GPU check (issue 17): GPT-2 M E2E LoRA at paper settings, fp32 against bf16, then the DDP path.

    python -m benchmarks.gpu_check [--steps 300] [--out results/bench/gpu]      # on a machine with CUDA

GPT-2 Medium's architecture with random weights (the device machine reaches no hub) and SmolLM2's tokenizer, on the
real E2E training files, at the paper's batch 8, length 512 and learning rate 2e-4; `--steps` optimizer steps per
precision, then the same bf16 run under torchrun on every visible GPU. Writes <out>/<device>.{json,md}: tokens/s,
peak GPU memory, and the training-loss curve of each run (bf16 must follow fp32's trend; random weights, so the
loss says nothing about E2E). `--device cpu --steps 2` runs the harness without a GPU (run so here: ~12 min, CPU
bf16 autocast is slow).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _overrides(steps: int, precision: str, device: str, results: str, tiny: bool) -> list[str]:
    out = ["experiment=table3", "scale=paper", "row=lora_qv_r4_a32", "logger=none", "model.source=random",
           "model.tokenizer=smollm2", f"scale.max_steps={steps}", "scale.generation.max_inputs=4",
           "scale.generation.max_val_examples=32", "scale.generation.max_num_beams=2", f"train.precision={precision}",
           f"train.device={device}", "train.log_every=10", "train.eval_every_epoch=false", "train.select_best=",
           f"results_dir={results}"]
    if tiny:
        out += ["model.arch.n_layer=2", "scale.max_train_examples=64", "train.log_every=1"]
    return out


def _run(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"status": "failed", "error": proc.stderr[-3000:]}
    final = [line for line in proc.stdout.splitlines() if line.startswith("success: ")]
    run_dir = Path(final[-1].split(" ", 2)[1]) if final else None
    if run_dir is None:
        return {"status": "failed", "error": proc.stdout[-3000:]}
    record = json.loads((run_dir / "final.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"status": record["status"], "train_s": record["timing"].get("train_s"),
            "steps": record["steps"], "peak_mem_mb": record.get("peak_mem_mb"),
            "loss_curve": [(r["step"], r["loss"]) for r in rows if r.get("split") == "train"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "gpu"))
    args = parser.parse_args(argv)
    import torch

    tiny = args.device == "cpu"
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    gpus = torch.cuda.device_count() if args.device == "cuda" else 1
    env = dict(os.environ, WANDB_MODE="disabled")
    tokens_per_step = 8 * 512  # an upper bound: batches are padded to their longest row, not to 512
    results = {"device": name, "gpus": gpus, "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            cmd = [sys.executable, "-m", "experiments.train",
                   *_overrides(args.steps, precision, args.device, tmp, tiny)]
            results["runs"][precision] = _run(cmd, env)
        ddp = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", "experiments.train",
               *_overrides(args.steps, "bf16", "auto" if args.device == "cuda" else "cpu", tmp + "/ddp", tiny)]
        results["runs"][f"bf16 ddp x{gpus}"] = _run(ddp, env)
    for r in results["runs"].values():
        if r.get("train_s"):
            r["tokens_per_s_upper_bound"] = r["steps"] * tokens_per_step / r["train_s"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# GPU check on {name} (x{gpus}): GPT-2 M architecture (random weights), E2E, LoRA r=4, batch 8", "",
             "| run | status | train s | tokens/s (<=) | peak MB (final.json) | first / last logged loss |",
             "|---|---|---|---|---|---|"]
    for k, r in results["runs"].items():
        curve = r.get("loss_curve") or []
        ends = f"{curve[0][1]:.3f} / {curve[-1][1]:.3f}" if curve else "—"
        peak = f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") else "—"
        lines.append(f"| {k} | {r['status']} | {r.get('train_s') or 0:.0f} | {r.get('tokens_per_s_upper_bound') or 0:.0f}"
                     f" | {peak} | {ends} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(r["status"] != "success" for r in results["runs"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
