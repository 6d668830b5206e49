"""Every run directory of a scale as one pandas DataFrame, one row per run.

A run directory (DESIGN.md, "the run directory") is `results/runs/<scale>/<experiment>/<override dirname>/` with
`.hydra/config.yaml` (the composed config), `final.json` (written last: status, metrics, params, wall time, ...)
and `metrics.jsonl`. A directory with a config but no final.json is `incomplete` (still running, or killed), one whose
final.json is not a run record is `damaged`; a status is never guessed. `final.json`'s status (success | failed | diverged) is kept as written.

Everything that depends on the exact key names other code writes lives in the mappings just below (METRICS,
METRIC_SPLITS, TASK_ALIASES, CONFIG_COLUMNS): adjust them there, nowhere else.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import yaml

# ------------------------------------------------------------------------------------------- key-name mappings
# canonical metric -> the keys a run's final.json `metrics` may hold it under, first found wins, each with the unit
# it is written in: "fraction" (0..1), "percent" (0..100) or "raw" (NIST, CIDEr, losses); tables convert to the
# paper's unit. "{part}" stands for a test-set part (METRIC_SPLITS). Our runner writes E2E's BLEU, METEOR, ROUGE_L
# x100 and WebNLG's/DART's BLEU x100 with METEOR, TER as fractions (experiments/metrics), under eval_ / eval_{part}_.
_F, _P, _R = "fraction", "percent", "raw"
METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "accuracy": (("eval_accuracy", _F), ("accuracy", _F), ("val_accuracy", _F), ("eval_acc", _F), ("acc", _F),
                 ("test_accuracy", _F)),
    "matthews": (("eval_matthews_correlation", _F), ("matthews_correlation", _F), ("eval_mcc", _F), ("mcc", _F),
                 ("matthews", _F)),
    "pearson": (("eval_pearson", _F), ("pearson", _F), ("eval_pearsonr", _F), ("pearsonr", _F)),
    "val_loss": (("val_loss", _R), ("eval_loss", _R)),
    "BLEU": (("eval_BLEU", _P), ("eval_{part}_BLEU", _P), ("BLEU", _F), ("{part}_BLEU", _F), ("bleu", _F)),
    "NIST": (("eval_NIST", _R), ("NIST", _R), ("nist", _R)),
    "METEOR": (("eval_METEOR", _P), ("eval_{part}_METEOR", _F), ("METEOR", _F), ("{part}_METEOR", _F),
               ("MET", _F)),
    "ROUGE_L": (("eval_ROUGE_L", _P), ("ROUGE_L", _F), ("rouge_l", _F), ("ROUGE-L", _F)),
    "CIDEr": (("eval_CIDEr", _R), ("CIDEr", _R), ("cider", _R)),
    "TER": (("eval_{part}_TER", _F), ("eval_TER", _F), ("TER", _F), ("{part}_TER", _F)),
}
# a test-set part (WebNLG) -> its spellings. "A" (all categories) also accepts a key without a part.
METRIC_SPLITS: dict[str, tuple[str, ...]] = {"U": ("U", "unseen"), "S": ("S", "seen"), "A": ("A", "all")}
# paper task -> task.name spellings our configs may use (compared after `_norm`: lower case, letters and digits)
TASK_ALIASES: dict[str, tuple[str, ...]] = {
    "mnli": ("mnli", "mnlim", "glue_mnli", "multinli"), "sst2": ("sst2", "glue_sst2"), "mrpc": ("mrpc",),
    "cola": ("cola",), "qnli": ("qnli",), "qqp": ("qqp",), "rte": ("rte",), "stsb": ("stsb",),
    "e2e": ("e2e", "e2e_nlg", "e2enlg"), "webnlg": ("webnlg", "webnlg2017"), "dart": ("dart",),
    "wikisql": ("wikisql",), "samsum": ("samsum",),
}
# the full MNLI training set: task.n of None, <= 0 or >= this counts as "full" (MNLI(m)-392K)
MNLI_FULL = 392_702
# short frame columns -> dotted config keys (first found wins)
CONFIG_COLUMNS: dict[str, tuple[str, ...]] = {
    "model": ("model.name",), "model_note": ("model.note",), "family": ("model.family",),
    "task": ("task.name",), "n": ("task.n",),
    "method": ("method.name",), "r": ("method.r",), "alpha": ("method.alpha",), "targets": ("method.targets",),
    "scaling": ("method.scaling",), "lr_ratio_b": ("method.lr_ratio_b",),
    "adapter_r": ("method.adapter_r",), "drop_layers": ("method.drop_layers",), "l_p": ("method.l_p",),
    "l_i": ("method.l_i",), "top_k": ("method.top_k",),
    "lr": ("train.lr",), "epochs": ("train.epochs",), "batch_size": ("train.batch_size",),
    "max_steps": ("train.max_steps",), "group_by_length": ("train.group_by_length",), "seed": ("seed",),
    "experiment": ("experiment",), "scale": ("scale.name",),
}
# config keys under `task` that say how much data a run used (printed in table footers)
DATA_SIZE_KEY = re.compile(r"^(n|max_[^.]*|[^.]*_examples|[^.]*_size|[^.]*_samples|limit[^.]*)$")  # top-level task keys
ROLE_ORDER = ("q", "k", "v", "o")  # targets are written in this order: "q,v"

STATUSES = ("success", "failed", "diverged", "incomplete", "damaged")


# ------------------------------------------------------------------------------------------------- helpers
def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def canonical_task(name: Any) -> Optional[str]:
    """Our task.name -> the paper's task key (TASK_ALIASES), or the normalised name itself when unknown."""
    if name is None:
        return None
    n = _norm(name)
    for task, aliases in TASK_ALIASES.items():
        if n in {_norm(a) for a in aliases}:
            return task
    return n


def targets_key(targets: Any) -> Optional[str]:
    """["v", "q"] -> "q,v": one spelling of a set of roles, for matching and grouping."""
    if targets is None or (isinstance(targets, float) and math.isnan(targets)):
        return None
    if isinstance(targets, str):
        targets = [t for t in re.split(r"[\s,\[\]]+", targets) if t]
    order = {r: i for i, r in enumerate(ROLE_ORDER)}
    return ",".join(sorted({str(t) for t in targets}, key=lambda t: (order.get(t, 99), t)))


def is_full(n: Any) -> bool:
    return n is None or (isinstance(n, float) and math.isnan(n)) or int(n) <= 0 or int(n) >= MNLI_FULL


def load_config(path: Path) -> dict:
    """.hydra/config.yaml with its interpolations resolved (e.g. train.lr: ${lr_by_method[${method.name}]}); a
    value whose interpolation cannot be resolved here (a Hydra-only resolver) is kept as written."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        raw = OmegaConf.load(path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException):
        return {}
    try:
        return OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException:
        plain = OmegaConf.to_container(raw, resolve=False)

        def resolve_each(node, key_path: str):
            if isinstance(node, dict):
                return {k: resolve_each(v, f"{key_path}.{k}" if key_path else str(k)) for k, v in node.items()}
            try:
                value = OmegaConf.select(raw, key_path, throw_on_resolution_failure=True)
            except OmegaConfBaseException:
                return node
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

        return resolve_each(plain, "")


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _jsonl_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows (none when the file is missing); unreadable lines are skipped."""
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def last_step(run_dir: Path, rows: Optional[list[dict]] = None) -> Optional[int]:
    """The largest `step` logged in metrics.jsonl (None when there is none)."""
    steps = [int(r["step"]) for r in (_jsonl_rows(run_dir) if rows is None else rows)
             if isinstance(r.get("step"), (int, float))]
    return max(steps) if steps else None


LOWER_IS_BETTER = ("loss", "TER")  # parts of a metric key; every other metric is best at its largest


def best_epoch_metrics(rows: list[dict]) -> dict[str, float]:
    """{key: its best value over the run's evaluations} for every key evaluated more than once (train.eval_every_epoch:
    the paper's GLUE protocol reports each seed's best epoch)."""
    evals = [r for r in rows if r.get("split") == "eval"]
    seen = Counter(k for r in evals for k in r)
    best: dict[str, float] = {}
    for row in evals:
        for k, v in row.items():
            if k in ("step", "epoch") or seen[k] < 2 or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue  # a key evaluated once (generation metrics: the final evaluation only) has no best epoch
            lower = any(part in k for part in LOWER_IS_BETTER)
            if k not in best or (v < best[k] if lower else v > best[k]):
                best[k] = float(v)
    return best


# --------------------------------------------------------------------------------------------------- collect
def read_run(run_dir: Path, scale: str) -> dict[str, Any]:
    """One run directory -> one flat record (config columns, status, metrics as `m:<key>`, params, wall time)."""
    cfg_path = run_dir / ".hydra" / "config.yaml"
    flat = flatten(load_config(cfg_path)) if cfg_path.exists() else {}
    final_path = run_dir / "final.json"
    final = _read_json(final_path) if final_path.exists() else None
    rec: dict[str, Any] = {"run_dir": str(run_dir), "override": run_dir.name}
    for col, keys in CONFIG_COLUMNS.items():
        rec[col] = next((flat[k] for k in keys if k in flat), None)
    rec["scale"] = rec["scale"] or scale
    if not final_path.exists():
        rec["status"], rec["error"] = "incomplete", "no final.json"
    elif not isinstance(final, dict) or not isinstance(final.get("status"), str):
        rec["status"] = "damaged"  # not JSON, or JSON of another shape: named, never a crash
        rec["error"] = f"{final_path} is not a run record (not a JSON object with a status); rerun the sweep"
        final = None
    else:
        rec["status"] = str(final.get("status", "unknown"))
        rec["error"] = final.get("error")
        for key in ("experiment", "seed"):  # final.json repeats them: fills a missing config
            if rec[key] is None and final.get(key) is not None:
                rec[key] = final[key]
        params = final.get("params") or {}
        rec["trainable"], rec["total"] = params.get("trainable"), params.get("total")
        rec["wall_time_s"], rec["peak_mem_mb"] = final.get("wall_time_s"), final.get("peak_mem_mb")
        rec["git_commit"] = final.get("git_commit")
        rec["train_examples"] = final.get("train_examples")
        evals = final.get("eval_examples")
        rec["eval_n"] = evals.get("eval") if isinstance(evals, dict) else None  # the split a table reports
        for k, v in (final.get("metrics") or {}).items():
            if isinstance(v, (int, float)) or v is None:
                rec[f"m:{k}"] = float("nan") if v is None else float(v)
    if rec["experiment"] is None:  # the directory layout says it: runs/<scale>/<experiment>/<override>/
        rec["experiment"] = run_dir.parent.name
    rec["task_key"] = canonical_task(rec["task"])
    rec["targets"] = targets_key(rec["targets"])
    # what the run itself wrote (the scale's, the task's data caps, the loop's step caps); the config's for old runs
    written = final.get("deviations") if isinstance(final, dict) else None
    rec["deviations"] = tuple(written if isinstance(written, list) else flat.get("scale.deviations") or ())
    rec["data"] = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in flat.items()
                            if k.startswith("task.") and DATA_SIZE_KEY.match(k.split(".", 1)[1]) and v is not None)
    rows = _jsonl_rows(run_dir)
    rec["steps"] = last_step(run_dir, rows)
    if flat.get("train.eval_every_epoch"):
        rec |= {f"best:{k}": v for k, v in best_epoch_metrics(rows).items()}
    rec |= {f"cfg:{k}": v for k, v in flat.items() if not isinstance(v, list)}
    return rec


def find_run_dirs(runs_root: Path) -> list[Path]:
    """Every directory under runs_root holding .hydra/config.yaml or final.json (a run, finished or not); a run
    shared by equal configurations (a symlink <experiment>/<name> -> another experiment's run) under each name."""
    dirs = {p.parent.parent for p in runs_root.glob("**/.hydra/config.yaml")}
    dirs |= {p.parent for p in runs_root.glob("**/final.json")}
    dirs |= {p.parent for p in runs_root.glob("*/*/final.json")}  # `**` does not follow symlinks; `*/*` does
    dirs |= {p.parent.parent for p in runs_root.glob("*/*/.hydra/config.yaml")}
    return sorted(dirs)


def collect(results: str | Path, scale: str) -> pd.DataFrame:
    """All runs of `scale` under `results/runs/<scale>/` as a DataFrame (empty, with the columns, if none).
    A run's experiment is the folder it is listed in (a shared run's config names the sweep that ran it first)."""
    root = Path(results) / "runs" / scale
    records = []
    for d in find_run_dirs(root) if root.exists() else []:
        rec = read_run(d, scale)
        if d.parent.parent == root:
            rec["experiment"] = d.parent.name
        records.append(rec)
    base_cols = ["run_dir", "override", *CONFIG_COLUMNS, "task_key", "status", "error", "trainable", "total",
                 "wall_time_s", "peak_mem_mb", "steps", "train_examples", "eval_n", "deviations", "data"]
    frame = pd.DataFrame.from_records(records)
    for col in base_cols:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    return frame


# ----------------------------------------------------------------------------------------------- metric values
def metric_columns(frame: pd.DataFrame, metric: str, split: Optional[str] = None) -> list[tuple[str, str]]:
    """The `m:<key>` columns of `frame` that may hold canonical `metric` of test-set part `split`, with their units,
    in the order of METRICS (keys that name the part first)."""
    named_part, plain = [], []
    for key, unit in METRICS.get(metric, ((metric, _R),)):
        if "{part}" in key:
            named_part += [(key.format(part=part), unit) for part in METRIC_SPLITS.get(split, (split,))] if split else []
        elif split in (None, "A"):
            plain.append((key, unit))
    lower = {c.lower(): c for c in frame.columns if c.startswith("m:")}
    return [(lower[f"m:{key}".lower()], unit) for key, unit in named_part + plain if f"m:{key}".lower() in lower]


def to_unit(value: float, ours: str, theirs: str) -> float:
    """A value written in unit `ours` expressed in the paper's unit `theirs`."""
    if ours == theirs or _R in (ours, theirs):
        return value
    return value * 100.0 if (ours, theirs) == (_F, _P) else value / 100.0


def metric_values(runs: pd.DataFrame, metric: str, unit: str, split: Optional[str] = None) -> pd.Series:
    """The metric of each run in the paper's unit; NaN where a run has none (diverged runs often have NaN)."""
    values = pd.Series(float("nan"), index=runs.index)
    for col, ours in metric_columns(runs, metric, split):  # per run: the first key it has (runs of different tasks)
        values = values.fillna(pd.to_numeric(runs[col], errors="coerce").map(lambda v, o=ours: to_unit(v, o, unit)))
    return values


def best_epoch_values(runs: pd.DataFrame, metric: str, unit: str, split: Optional[str] = None) -> pd.Series:
    """Like metric_values, from each run's best epoch (`best:<key>`; NaN for runs evaluated once)."""
    best = {c: "m:" + c[len("best:"):] for c in runs.columns if c.startswith("best:")}
    return metric_values(runs[list(best)].rename(columns=best), metric, unit, split) if best else \
        pd.Series(float("nan"), index=runs.index)


def summarize(values: Iterable[float]) -> tuple[Optional[float], Optional[float], int]:
    """(mean, sample std (ddof=1; None for one seed), number of finite values) of the seeds' values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


def aggregate(frame: pd.DataFrame, by: list[str], metric: str, unit: str = "raw",
              split: Optional[str] = None) -> pd.DataFrame:
    """Mean ± std over seeds of `metric` per group of `by`, with how many seeds succeeded, failed, diverged or are
    incomplete. Only successful runs enter the mean; the others are counted, never averaged in as zeros."""
    frame = frame.assign(_value=metric_values(frame, metric, unit, split))
    rows = []
    for key, group in frame.groupby(by, dropna=False, sort=True):
        ok = group[group["status"] == "success"]
        mean, std, n = summarize(ok["_value"])
        counts = group["status"].value_counts()
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)))
                    | {"mean": mean, "std": std, "n_seeds": n, "seeds": sorted(ok["seed"].dropna().tolist()),
                       **{f"n_{s}": int(counts.get(s, 0)) for s in STATUSES}})
    return pd.DataFrame(rows)
