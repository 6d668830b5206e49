"""The learning-rate searches behind the per-method rates of a table (tables <table>_lr* of conf/tables/).

Each method's runs at several learning rates, scored on examples held out of the training set (`val_accuracy`,
higher is better) or, for generation tasks, on the validation split (`val_loss`, lower is better), with the final
training loss beside it (a rate whose loss did not come down is under-trained, not a finding). The best
rate per method is what the table's lr_by_method at that scale should hold; the table says whether it does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from analysis.collect import summarize
from analysis.tables import TableResult, _out_dir, fmt, footer, markdown, write

REPO = Path(__file__).resolve().parents[1]


def _study_of(table: str) -> tuple[dict, dict]:
    """(the study file of conf/tables/ that declares `table`, that table's entry), ({}, {}) when none does. Read as
    plain YAML: sweep keys hold dots, and interpolations stay as written."""
    for path in sorted((REPO / "conf" / "tables").glob("*.yaml")):
        study = yaml.safe_load(path.read_text()) or {}
        spec = (study.get("tables") or {}).get(table)
        if spec is not None:
            return study, spec
    return {}, {}


def budget_lrs(table: str, scale: str) -> dict[str, float]:
    """lr_by_method at `scale` of the study file (conf/tables/) that declares `table`, {} when there is none."""
    study, _ = _study_of(table)
    return dict(((study.get("scales") or {}).get(scale) or {}).get("lr_by_method") or {})


def swept_lr(table: str) -> Optional[float]:
    """The one train.lr a table of conf/tables/ sweeps (rank_scaling_rs: the rate its search chose), else None."""
    value = (_study_of(table)[1].get("sweep") or {}).get("train.lr")
    return float(value) if value is not None and "," not in str(value) else None


def _method_label(method, scaling, lr_ratio_b=None) -> str:
    label = f"{method} alpha/sqrt(r)" if scaling == "rs" else method
    ratio = 1.0 if lr_ratio_b is None or pd.isna(lr_ratio_b) else float(lr_ratio_b)
    return label if ratio == 1.0 else f"{label} LoRA+ (B x{ratio:g})"


def _used_by_rates(tables: tuple[str, ...]) -> dict[str, float]:
    """method label -> the rate each of `tables` sweeps (rank_scaling_rs: alpha / sqrt(r)'s; _plus: LoRA+'s)."""
    out = {}
    for table in tables:
        sweep = _study_of(table)[1].get("sweep") or {}
        out[_method_label("lora", sweep.get("method.scaling"), sweep.get("method.lr_ratio_b"))] = swept_lr(table)
    return out


def lr_search(frame: pd.DataFrame, scale: str, table: str = "table15", out_dir: Optional[Path] = None,
              results: Optional[Path] = None, used_by: tuple[str, ...] = ()) -> TableResult:
    """`used_by`: the tables whose rates the search sets, when they are not `table`'s lr_by_method (each sweeps
    its rate as train.lr for one LoRA variant)."""
    name = f"{table}_lr"
    runs = frame[frame["experiment"].eq(name) & frame["scale"].eq(scale)] if not frame.empty else frame
    if not runs.empty:
        scaling, ratio = (runs[c] if c in runs else pd.Series(None, index=runs.index) for c in ("scaling", "lr_ratio_b"))
        runs = runs.assign(method=[_method_label(*x) for x in zip(runs["method"], scaling, ratio)])
    configured = _used_by_rates(used_by) if used_by else budget_lrs(table, scale)
    by_accuracy = "m:val_accuracy" in runs.columns and runs["m:val_accuracy"].notna().any()
    key, label, scale_by, sign = (("val_accuracy", "val accuracy (%)", 100.0, 1.0) if by_accuracy
                                  else ("val_loss", "val loss", 1.0, -1.0))
    tidy, body = [], []
    for (method, lr), group in (runs.groupby(["method", "lr"], sort=True) if not runs.empty else []):
        ok = group[group["status"] == "success"]
        val, std, n = summarize(ok.get(f"m:{key}", pd.Series(dtype=float)) * scale_by)
        loss, _, _ = summarize(ok.get("m:train_loss", pd.Series(dtype=float)))
        status = ", ".join(f"{k} {v}" for k, v in group["status"].value_counts().items() if k != "success")
        tidy.append({"method": method, "lr": float(lr), key: val, "val_std": std, "n_seeds": n,
                     "final_train_loss": loss, "other_runs": status})
    best = {}  # method -> (lr, score); score = sign * value, higher is better
    for rec in tidy:
        if rec[key] is not None and sign * rec[key] > best.get(rec["method"], (None, -math.inf))[1]:
            best[rec["method"]] = (rec["lr"], sign * rec[key])
    for rec in tidy:
        rec["best"] = best.get(rec["method"], (None,))[0] == rec["lr"]
        rec["in_budget"] = configured.get(rec["method"]) == rec["lr"]
        body.append([rec["method"], f"{rec['lr']:g}", fmt(rec[key], 1 if by_accuracy else 3)
                     + (" ◀ best" if rec["best"] else ""),
                     fmt(rec["final_train_loss"], 3), "yes" if rec["in_budget"] else "", rec["other_runs"]])
    header = ["method", "learning rate", label, "final train loss", f"used by {', '.join(used_by) or table}",
              "not counted"]
    scored_on = "pairs held out of the training set" if by_accuracy else "the validation split"
    md = markdown(f"Learning-rate search for {table}: {label} on {scored_on}, scale `{scale}`",
                  header, body, footer(runs, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


def table15_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """The learning-rate search behind Table 15's per-method rates (not a paper table)."""
    return lr_search(frame, scale, "table15", out_dir=out_dir, results=results)


def table2_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """The learning-rate search for Table 2's BitFit and Adapter^D rates (not a paper table)."""
    return lr_search(frame, scale, "table2", out_dir=out_dir, results=results)


def table3_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """The learning-rate search on E2E val_loss behind the generation tables' rates (not a paper table)."""
    return lr_search(frame, scale, "table3", out_dir=out_dir, results=results)


def rank_scaling_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """alpha / sqrt(r)'s and LoRA+'s rates at r = 4 on MNLI train hold-outs, behind rank_scaling_rs and
    rank_scaling_plus (not a paper table)."""
    return lr_search(frame, scale, "rank_scaling", out_dir=out_dir, results=results,
                     used_by=("rank_scaling_rs", "rank_scaling_plus"))


def rank_scaling_e2e_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """alpha / sqrt(r)'s and LoRA+'s rates at r = 4 on E2E val_loss, behind rank_scaling_e2e_rs and
    rank_scaling_e2e_plus (not a paper table)."""
    return lr_search(frame, scale, "rank_scaling_e2e", out_dir=out_dir, results=results,
                     used_by=("rank_scaling_e2e_rs", "rank_scaling_e2e_plus"))


LR_TABLE_FUNCTIONS = {"table15_lr": table15_lr, "table2_lr": table2_lr, "table3_lr": table3_lr,
                      "rank_scaling_lr": rank_scaling_lr, "rank_scaling_e2e_lr": rank_scaling_e2e_lr}
