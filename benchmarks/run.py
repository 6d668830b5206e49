"""Run every benchmark, one process per comparison (and per configuration for peak memory); write the summary.

    python -m benchmarks.run [--tiny] [--out DIR] [--only train,latency,mixed,checkpoint] [--set repeats=9 ...]

Writes DIR/raw/<job>.json (every number, per job), DIR/summary.json (the headline ratios, settings, machine,
versions) and DIR/summary.md (the same as tables). DIR defaults to results/bench, or results/bench/tiny with --tiny,
so a harness check never overwrites a real run. Jobs are started with fork by default: the parent imports torch,
transformers and peft once and computes nothing, so each child starts from the same clean state without paying
the imports again (--start-method spawn gives fully fresh interpreters). Exit status 1 if any job failed.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import Settings, finite, machine, versions

REPO = Path(__file__).resolve().parents[1]
BENCHES = ("train", "latency", "mixed", "checkpoint")
SUMMARY_KEYS = ("lora_over_fullft_step", "ours_over_peft_step", "ours_over_peft_peak_mem", "mfu_lora",
                "merged_over_base_latency", "mixed_over_sequential_throughput", "mixed_over_peft_throughput",
                "mixed_over_sequential_generate_throughput", "mixed_over_peft_generate_throughput")
# the targets for the full run (<= or >= a bound); reported, never asserted
TARGETS = {"lora_over_fullft_step": ("<=", 0.70), "ours_over_peft_step": ("<=", 0.95),
           "ours_over_peft_peak_mem": ("<=", 1.0), "merged_over_base_latency": ("<=", 1.01),
           "mixed_over_sequential_throughput": (">=", 2.0), "mixed_over_peft_throughput": (">=", 1.0)}


def plan(only: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """(job id, job function, keyword arguments), in run order."""
    from benchmarks.jobs import KINDS, TRAIN_CONFIGS

    jobs = []
    if "train" in only:
        for kind in KINDS:
            jobs.append((f"train_time_{kind}", "train_time", {"kind": kind}))
            jobs += [(f"train_mem_{kind}_{c}", "train_mem", {"kind": kind, "config": c}) for c in TRAIN_CONFIGS]
    if "latency" in only:
        jobs.append(("latency", "latency", {}))
    if "mixed" in only:
        jobs.append(("mixed", "mixed", {}))
    if "checkpoint" in only:
        jobs.append(("checkpoint", "checkpoint", {}))
    return jobs


def _child(func: str, settings: dict, kwargs: dict, path: str) -> None:
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside peft, not ours
    hf_logging.disable_progress_bar()

    from benchmarks.jobs import JOBS

    s = Settings(**settings)
    torch.set_num_threads(s.resolved_threads())
    try:
        result = {"ok": True, "threads": torch.get_num_threads(), **JOBS[func](s, **kwargs)}
        code = 0
    except Exception:  # the parent reports it and goes on with the other jobs
        result, code = {"ok": False, "error": traceback.format_exc()}, 1
    Path(path).write_text(json.dumps(result, indent=1, default=float))
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown of the forked copy


def run_job(ctx, job: str, func: str, s: Settings, kwargs: dict, raw: Path) -> dict:
    path = raw / f"{job}.json"
    path.unlink(missing_ok=True)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    p = ctx.Process(target=_child, args=(func, asdict(s), kwargs, str(path)), name=job)
    p.start()
    p.join()
    wall = time.perf_counter() - t0
    if path.is_file():
        result = json.loads(path.read_text())
    else:
        result = {"ok": False, "error": f"the job process exited with {p.exitcode} and wrote nothing (killed? "
                                        "out of memory?)"}
    result |= {"job": job, "wall_s": wall, "load_average_before": load_before}
    path.write_text(json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------------------------- summary
def _get(results: dict, *keys):
    x = results
    for k in keys:
        if not isinstance(x, dict) or k not in x:
            return float("nan")
        x = x[k]
    return x


def _ratio(a, b) -> float:
    return a / b if finite(a) and finite(b) and b else float("nan")


def _geomean(xs: list[float]) -> float:
    xs = [x for x in xs if finite(x) and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def summarise(results: dict[str, dict]) -> dict:
    """Headline ratios. The decoder (SmolLM2) gives the unsuffixed training keys, the encoder the *_encoder ones;
    merged_over_base_latency is the geometric mean over the batch x sequence cells."""
    out: dict[str, float] = {}
    for kind, suffix in (("decoder", ""), ("encoder", "_encoder")):
        t = lambda c, k="step_s": _get(results, f"train_time_{kind}", "configs", c, k)  # noqa: E731
        m = lambda c: _get(results, f"train_mem_{kind}_{c}", "peak_rss_mb")  # noqa: E731
        out[f"lora_over_fullft_step{suffix}"] = _ratio(t("lora"), t("full"))
        out[f"ours_over_peft_step{suffix}"] = _ratio(t("lora"), t("peft"))
        out[f"ours_over_peft_peak_mem{suffix}"] = _ratio(m("lora"), m("peft"))
        out[f"lora_over_fullft_peak_mem{suffix}"] = _ratio(m("lora"), m("full"))
        out[f"adapter_h_over_lora_step{suffix}"] = _ratio(t("adapter_h"), t("lora"))
        out[f"mfu_lora{suffix}"] = t("lora", "mfu")
        out[f"mfu_full{suffix}"] = t("full", "mfu")
    cells = _get(results, "latency", "cells")
    cells = cells if isinstance(cells, list) else []
    for v in ("lora_merged", "lora_unmerged", "adapter_l", "adapter_h"):
        key = "merged" if v == "lora_merged" else v.replace("lora_", "")
        out[f"{key}_over_base_latency"] = _geomean([c["over_base"][v] for c in cells])
    paths = lambda p: _get(results, "mixed", "paths", p, "rows_per_s")  # noqa: E731
    out["mixed_over_sequential_throughput"] = _ratio(paths("mixed"), paths("sequential"))
    out["mixed_over_peft_throughput"] = _ratio(paths("mixed"), paths("peft"))
    generated = lambda p: _get(results, "mixed", "generate", p, "new_tokens_per_s")  # noqa: E731
    out["mixed_over_sequential_generate_throughput"] = _ratio(generated("mixed"), generated("sequential"))
    out["mixed_over_peft_generate_throughput"] = _ratio(generated("mixed"), generated("peft"))
    ckpt = _get(results, "checkpoint")
    if isinstance(ckpt, dict) and ckpt.get("ok"):
        first = next(v for k, v in ckpt.items() if isinstance(v, dict))  # the decoder comes first
        out["adapter_over_full_checkpoint_bytes"] = first["adapter_over_full"]
    else:
        out["adapter_over_full_checkpoint_bytes"] = float("nan")
    return out


def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if not math.isfinite(x):
        return "n/a"
    if isinstance(x, int) or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown(summary: dict, results: dict[str, dict]) -> str:
    s, mach, ver = summary["settings"], summary["machine"], summary["versions"]
    tiny_note = " (--tiny: tiny random models, a harness check; the numbers mean nothing)" if s["tiny"] else ""
    lines = [f"# Benchmarks{tiny_note}",
             "", f"Written by `python -m benchmarks.run` on {summary['date']}.", "",
             "| machine | versions | settings |", "|---|---|---|",
             f"| {mach['cpu']}, {mach['usable_cores']} of {mach['logical_cores']} cores usable, "
             f"{mach['memory_gb']} GB, "
             f"load average {mach['load_average']} at start; {mach['platform']} | python {mach['python']}, "
             + ", ".join(f"{k} {v}" for k, v in ver.items())
             + f" | {s['threads']} torch threads, warm-up {s['warmup']}, median of {s['repeats']}; LoRA r={s['r']} "
               f"alpha={s['alpha']} dropout={s['dropout']} on {'/'.join(s['targets'])}; adapters r={s['adapter_r']} |",
             "", "## Headline ratios", "", "| ratio | value | target |", "|---|---|---|"]
    for k, v in summary["ratios"].items():
        op_bound = TARGETS.get(k)
        target = f"{op_bound[0]} {op_bound[1]}" if op_bound else ""
        lines.append(f"| {k} | {_fmt(v)} | {target} |")
    for kind in ("decoder", "encoder"):
        r = results.get(f"train_time_{kind}", {})
        if not r.get("ok"):
            continue
        c0 = next(iter(r["configs"].values()))
        lines += ["", f"## Training step: {r['model']} (batch {c0['batch']} x {c0['seq']} tokens, fused AdamW "
                      f"lr {s['lr']} as experiments.loop builds it)",
                  "", f"Reference sgemm {r['sgemm']['n']}³: {r['sgemm']['flops_per_s'] / 1e9:.1f} GFLOP/s before, "
                      f"{r['sgemm_after']['flops_per_s'] / 1e9:.1f} after the steps. N = {c0['matmul_params']:,} "
                      "matmul parameters; MFU counts 6N FLOP per token for full FT, 4N for a frozen base.", "",
                  "| configuration | step (s) | tokens/s | peak RSS (MB) | RSS after build (MB) | trainable params "
                  "| MFU |", "|---|---|---|---|---|---|---|"]
        for config, c in r["configs"].items():
            mem = results.get(f"train_mem_{kind}_{config}", {})
            lines.append(f"| {config} | {_fmt(c['step_s'])} | {_fmt(c['tokens_per_s'])} | "
                         f"{_fmt(mem.get('peak_rss_mb', float('nan')))} | "
                         f"{_fmt(mem.get('rss_after_build_mb', float('nan')))} | {c['trainable_params']:,} | "
                         f"{_fmt(c['mfu'])} |")
    lat = results.get("latency", {})
    if lat.get("ok"):
        variants = list(lat["cells"][0]["median_ms"]) if lat["cells"] else []
        lines += ["", f"## Inference latency: {lat['model']}, forward pass, median ms (x base)", "",
                  "LoRA merged vs unmerged logits: max relative difference "
                  f"{lat['merged_vs_unmerged_max_rel_diff']:.1e}.",
                  "", "| batch | seq | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
        for c in lat["cells"]:
            lines.append(f"| {c['batch']} | {c['seq']} | " + " | ".join(
                f"{_fmt(c['median_ms'][v])} ({_fmt(c['over_base'][v])})" for v in variants) + " |")
    mix = results.get("mixed", {})
    if mix.get("ok"):
        lines += ["", f"## {mix['adapters']} adapters in one batch: {mix['model']}, {mix['rows']} rows x "
                      f"{mix['seq']} tokens (row i uses adapter i mod {mix['adapters']})", "",
                  f"Outputs agree: mixed vs sequential max relative difference "
                  f"{mix['mixed_vs_sequential_max_rel_diff']:.1e}, mixed vs PEFT "
                  f"{mix['mixed_vs_peft_max_rel_diff']:.1e}.",
                  "", "| path | median (s) | rows/s |", "|---|---|---|"]
        labels = {"mixed": "lora.multi, one forward", "sequential": f"{mix['adapters']} separate forwards",
                  "peft": "PEFT adapter_names"}
        for name, p in mix["paths"].items():
            lines.append(f"| {labels.get(name, name)} | {_fmt(p['median_s'])} | {_fmt(p['rows_per_s'])} |")
        lines += ["", f"Generating: {mix['gen_prompt']} prompt tokens per row, then {mix['gen_new_tokens']} greedy "
                      "tokens with a KV cache (one generate call, K calls, PEFT's adapter_names). Tokens equal to "
                      f"the K-call path: {mix['generate_mixed_vs_sequential_equal_tokens']:.1%}, to PEFT's: "
                      f"{mix['generate_mixed_vs_peft_equal_tokens']:.1%}.",
                  "", "| path | median (s) | new tokens/s |", "|---|---|---|"]
        labels |= {"mixed": "lora.multi, one generate call", "sequential": f"{mix['adapters']} generate calls"}
        for name, p in mix["generate"].items():
            lines.append(f"| {labels.get(name, name)} | {_fmt(p['median_s'])} | {_fmt(p['new_tokens_per_s'])} |")
    ck = results.get("checkpoint", {})
    if ck.get("ok"):
        lines += ["", "## Checkpoint bytes (fp32 safetensors)", "",
                  "| model | full model | adapter file (LoRA + new head) | LoRA only | adapter / full |",
                  "|---|---|---|---|---|"]
        for name, c in ck.items():
            if isinstance(c, dict):
                lines.append(f"| {name} | {c['full_bytes']:,} | {c['adapter_bytes']:,} | {c['lora_only_bytes']:,} | "
                             f"{c['adapter_over_full']:.2e} |")
    failed = [j for j, r in results.items() if not r.get("ok")]
    if failed:
        lines += ["", "## Failed jobs", ""] + [f"- {j}: see raw/{j}.json" for j in failed]
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models, 2 repeats (checks the harness)")
    parser.add_argument("--out", type=Path, default=None, help="results/bench (results/bench/tiny with --tiny)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a setting of benchmarks.common.Settings (repeatable)")
    parser.add_argument("--start-method", choices=("fork", "spawn", "forkserver"),
                        default="fork" if "fork" in mp.get_all_start_methods() else "spawn")
    args = parser.parse_args(argv)
    only = tuple(b for b in args.only.split(",") if b)
    unknown = [b for b in only if b not in BENCHES]
    if unknown:
        parser.error(f"--only: unknown {unknown}; known: {', '.join(BENCHES)}")
    s = Settings.for_mode(args.tiny).override(args.set)
    out = args.out or REPO / "results" / "bench" / ("tiny" if args.tiny else "")
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if args.start_method == "fork":
        from benchmarks.jobs import preload

        preload()  # torch, transformers, peft imported once, before forking; nothing computed

    ctx = mp.get_context(args.start_method)
    jobs = plan(only)
    results: dict[str, dict] = {}
    t_start, mach = time.time(), machine()  # the load average before anything of ours runs
    for i, (job, func, kwargs) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job} ...", end=" ", flush=True)
        results[job] = run_job(ctx, job, func, s, kwargs, raw)
        status = "ok" if results[job]["ok"] else "FAILED (" + results[job]["error"].strip().splitlines()[-1] + ")"
        print(f"{status} in {results[job]['wall_s']:.1f} s", flush=True)
    ratios = summarise(results)
    summary = {**{k: ratios[k] for k in SUMMARY_KEYS}, "ratios": ratios,
               "targets": {k: {"bound": f"{op} {b}", "met": (ratios[k] <= b if op == "<=" else ratios[k] >= b)
                               if finite(ratios[k]) else None} for k, (op, b) in TARGETS.items()},
               "tiny": s.tiny, "settings": asdict(s) | {"threads": s.resolved_threads()},
               "machine": mach, "versions": versions(), "start_method": args.start_method,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t_start)),
               "wall_s": time.time() - t_start, "failed_jobs": [j for j, r in results.items() if not r["ok"]]}
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary, results))
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")
    for k in SUMMARY_KEYS:
        print(f"  {k:36s} {_fmt(ratios[k])}")
    return 1 if summary["failed_jobs"] else 0


if __name__ == "__main__":
    sys.exit(main())
