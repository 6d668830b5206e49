"""Tables of the studies beyond the paper (conf/tables/: rank_scaling), built like the paper's from run directories.

rank_scaling (MNLI, MiniLM) and rank_scaling_e2e (E2E, SmolLM2: Table 18's setting): LoRA's rank r under alpha / r
(the paper), alpha / sqrt(r) (rsLoRA) and LoRA+ (B at a larger rate), at one learning rate tuned for a small rank.
One row per variant, one column per rank: dev accuracy or test BLEU (mean over seeds) and the final training loss,
in the same tidy columns as the paper tables (the claims ledger reads them).
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from analysis.collect import summarize
from analysis.tables import DASH, TableResult, _out_dir, fmt, footer, markdown, write


def _variant(scaling, lr_ratio_b) -> str:
    base = "alpha/sqrt(r)" if scaling == "rs" else "alpha/r"
    ratio = float(lr_ratio_b) if lr_ratio_b is not None and not pd.isna(lr_ratio_b) else 1.0
    return base if ratio == 1.0 else f"{base}, LoRA+ (B x{ratio:g})"


def _rank_table(name: str, metric: str, what: str, frame, scale, out_dir=None, results=None) -> TableResult:
    """`metric` (a final.json key, x100 for accuracies) and the final training loss against r, per scaling rule."""
    runs = frame[frame["experiment"].eq(name) & frame["scale"].eq(scale)] if not frame.empty else frame
    factor = 100.0 if metric.endswith("accuracy") else 1.0
    tidy, body = [], []
    if not runs.empty:
        runs = runs.assign(variant=[_variant(s, b) for s, b in zip(runs["scaling"], runs["lr_ratio_b"])])
        ranks = sorted({int(r) for r in runs["r"]})
        for variant, group in runs.groupby("variant", sort=True):
            line = [variant]
            for r in ranks:
                ok = group[(group["r"] == r) & (group["status"] == "success")]
                value, std, n = summarize(ok.get(f"m:{metric}", pd.Series(dtype=float)) * factor)
                loss, _, _ = summarize(ok.get("m:train_loss", pd.Series(dtype=float)))
                eval_n = (int(pd.to_numeric(ok["eval_n"], errors="coerce").min())
                          if "eval_n" in ok and ok["eval_n"].notna().any() else None)
                tidy.append({"table": name, "scale": scale, "row": variant, "column": f"r={r}", "ours_mean": value,
                             "ours_std": std, "n_seeds": n, "eval_n": eval_n, "final_train_loss": loss})
                line.append(DASH if value is None else f"{fmt(value, 1)} (loss {fmt(loss, 3)}, n={n})")
            body.append(line)
        header = ["scaling", *[f"r={r}" for r in ranks]]
    else:
        header = ["scaling"]
    title = f"LoRA's rank under alpha / r, alpha / sqrt(r) and LoRA+ at one learning rate ({what}), scale `{scale}`"
    md = markdown(title, header, body, footer(runs, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


def rank_scaling(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """MNLI-m dev accuracy and final training loss against r, per scaling rule (not a paper table)."""
    return _rank_table("rank_scaling", "eval_accuracy", "MNLI-m dev accuracy, %", frame, scale, out_dir, results)


def rank_scaling_e2e(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """E2E test BLEU and final training loss against r, per scaling rule (Table 18's setting; not a paper table)."""
    return _rank_table("rank_scaling_e2e", "eval_BLEU", "E2E test BLEU", frame, scale, out_dir, results)


STUDY_TABLE_FUNCTIONS = {"rank_scaling": rank_scaling, "rank_scaling_e2e": rank_scaling_e2e}
