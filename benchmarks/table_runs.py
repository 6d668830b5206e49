"""End-to-end throughput of real table runs (issue 19): a whole local-scale run, timed by phase, ours against PEFT.

    python -m benchmarks.table_runs [--rows table15:lora_qv_r8,table3:lora_qv_r4_a32] [--impls ours,grouped,peft]
                                    [--threads 2] [--out results/bench/table_runs]      # -> table_runs.{json,md}

Each (row, implementation) is one real run of `python -m experiments.train experiment=<table> row=<row>
scale=local` in this process, into a temporary results folder: the same data, loop, evaluation and decoding.
Timers wrap the loop's phases from outside (no code in experiments/ knows it is timed): data (collating a batch),
forward (the job's loss), backward, optimizer (clipping and the AdamW step), checkpoints (writing them), and the
final evaluation (dev metrics; for generation also val_loss, decoding and scoring, from the job's own timing).
`grouped`: ours with train.group_by_length=50 (length-grouped batches, issue 19), the row otherwise unchanged.
`peft`: PEFT's LoRA (peft.inject_adapter_in_model) on the same modules, rank, alpha and dropout, with the same task
head trained, through the same loop; its run directory gets no base weights (they are our LoRA's ΔW-vs-W files).
One measurement per cell on a shared machine: compare ratios measured together, not across machines.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
IMPLS = {"ours": [], "grouped": ["train.group_by_length=50"], "peft": []}  # impl -> its extra overrides
PHASES = ("data", "forward", "backward", "optimizer", "checkpoints", "mid-run evaluation", "final evaluation")


class _Timed:
    """Seconds per phase, added up over the run."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - t0
        return timed


class _TimedJob:
    """A loop.Job whose batch/loss/evaluate/final are timed; everything else is the job's own."""

    def __init__(self, job, timer: _Timed):
        self._job = job
        self.batch = timer.wrap("data", job.batch)
        self.loss = timer.wrap("forward", job.loss)
        self.evaluate = timer.wrap("mid-run evaluation", job.evaluate)
        self.final = timer.wrap("final evaluation", job.final)

    def __len__(self) -> int:
        return len(self._job)

    def __getattr__(self, name):
        return getattr(self._job, name)


def _peft_apply(model, cfg) -> None:
    """PEFT's LoRA in place on the modules our targets name, the task head unfrozen as ours (lora.apply_method)."""
    from peft import LoraConfig, inject_adapter_in_model

    from lora.partial import unfreeze_named
    from lora.targets import find_targets

    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                       target_modules=[t.path for t in find_targets(model, list(cfg.targets))]), model)
    unfreeze_named(model, cfg.train_also)


def run_row(table: str, row: str, impl: str, threads: int, scale: str = "local") -> dict:
    from hydra import compose, initialize_config_dir

    from experiments import loop, precision, schemas, train
    from experiments.rundir import RunDir

    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; known: {', '.join(IMPLS)}")
    schemas.register()
    timer = _Timed()
    real_setup, real_make_job, real_save = precision.setup, train.make_job, RunDir.save_checkpoint

    def timed_setup(*args, **kwargs):
        prec = real_setup(*args, **kwargs)
        prec.backward = timer.wrap("backward", prec.backward)
        prec.step = timer.wrap("optimizer", prec.step)
        return prec

    def timed_save(self, *args, **kwargs):
        return timer.wrap("checkpoints", real_save)(self, *args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        stack.enter_context(mock.patch.object(loop.precision, "setup", timed_setup))
        stack.enter_context(mock.patch.object(train, "make_job", lambda *a: _TimedJob(real_make_job(*a), timer)))
        stack.enter_context(mock.patch.object(RunDir, "save_checkpoint", timed_save))
        if impl == "peft":
            stack.enter_context(mock.patch("lora.apply_method", _peft_apply))
            stack.enter_context(mock.patch("experiments.base_weights.save", lambda *a, **k: None))
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                f"experiment={table}", f"row={row}", f"scale={scale}", "logger=none", f"train.threads={threads}",
                f"results_dir={tmp}", *IMPLS[impl]])
        t0 = time.perf_counter()
        final = train.run(cfg, run_dir=Path(tmp) / "run")
        wall = time.perf_counter() - t0
    if final.get("status") != "success":
        raise RuntimeError(f"{table}/{row} ({impl}) ended {final.get('status')}: {final.get('error')}")
    t = cfg.train
    examples = final["steps"] * t.batch_size * t.grad_accum
    timing = final.get("timing", {})
    phases = dict(timer.seconds)
    return {"table": table, "row": row, "impl": impl, "wall_s": wall, "steps": final["steps"],
            "examples_trained": examples, "train_s": timing.get("train_s"),
            "examples_per_s": examples / timing["train_s"] if timing.get("train_s") else None,
            "phases_s": phases, "phase_share_of_wall": {k: v / wall for k, v in phases.items()},
            "final_timing": {k: v for k, v in timing.items() if k.endswith("_s")},
            "metrics": {k: v for k, v in final["metrics"].items() if isinstance(v, (int, float))},
            "trainable": final["params"]["trainable"]}


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"# End-to-end throughput of real table runs (scale `{machine.get('scale')}`)", "",
             f"Generated by `python -m benchmarks.table_runs`: one run per cell on {machine.get('cpu', '?')} "
             f"({machine.get('threads')} threads; load average {machine.get('load_average')} when it ended: other "
             "processes shared the cores if it exceeds the threads), model load and tokenisation included in the "
             "wall time; the first cell also pays the imports. "
             "Phases are timed from outside the loop; `other` is the rest of the wall time (model load, "
             "tokenisation, data loading, writing the run directory).", "",
             "| table / row | impl | wall s | examples/s (training) | " + " | ".join(PHASES) + " | other |",
             "|---|---|---|---|" + "---|" * (len(PHASES) + 1)]
    for r in results:
        shares = r["phase_share_of_wall"]
        other = 1.0 - sum(shares.values())
        lines.append(f"| {r['table']} / {r['row']} | {r['impl']} | {r['wall_s']:.0f} | {r['examples_per_s']:.2f} | "
                     + " | ".join(f"{100 * shares.get(p, 0.0):.0f}%" for p in PHASES) + f" | {100 * other:.0f}% |")
    by = {(r["table"], r["row"], r["impl"]): r for r in results}
    pairs = (("ours", "peft"), ("grouped", "peft"), ("grouped", "ours"))  # (measured, against)
    ratios = [f"- {t} / {row}: {impl} / {base} examples/s {by[(t, row, impl)]['examples_per_s'] / by[(t, row, base)]['examples_per_s']:.2f}, "
              f"wall {by[(t, row, impl)]['wall_s'] / by[(t, row, base)]['wall_s']:.2f}"
              for (t, row, _) in dict.fromkeys((t, row, None) for t, row, _ in by)
              for impl, base in pairs if (t, row, impl) in by and (t, row, base) in by]
    metrics = [f"- {r['table']} / {r['row']} ({r['impl']}): "
               + ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["metrics"].items()) if k.startswith(("eval_", "val_")))
               for r in results]
    return "\n".join(lines + [""] + ratios + ["", "Results of each run (one seed: equal within seed noise, not "
                                                "bit-equal, when batches differ):"] + metrics) + "\n"


def main(argv: list[str] | None = None) -> None:
    from benchmarks.common import machine, versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="table15:lora_qv_r8,table3:lora_qv_r4_a32")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", default="local", help="smoke: a check of the harness in seconds")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "table_runs"))
    args = parser.parse_args(argv)
    results = []
    for spec in args.rows.split(","):
        table, row = spec.split(":")
        for impl in args.impls.split(","):
            results.append(run_row(table, row, impl, args.threads, args.scale))
            print(json.dumps({k: results[-1][k] for k in ("table", "row", "impl", "wall_s", "examples_per_s")}))
    info = machine() | {"threads": args.threads, "scale": args.scale}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("table_runs.json", json.dumps({"machine": info, "versions": versions(), "runs": results},
                                                      indent=1)),
                       ("table_runs.md", markdown(results, info))):
        tmp = out / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)  # atomic
    print((out / "table_runs.md").read_text(), end="")


if __name__ == "__main__":
    main()
