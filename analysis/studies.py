"""Tables of the studies beyond the paper (conf/tables/: rank_scaling), built like the paper's from run directories.

rank_scaling (MNLI, MiniLM) and rank_scaling_e2e (E2E, SmolLM2: Table 18's setting): LoRA's rank r under alpha / r
(the paper), alpha / sqrt(r) (rsLoRA) and LoRA+ (B at a larger rate), at alpha / r's learning rate (tuned at a
small rank) and, for alpha / sqrt(r) and LoRA+, also at their own rates tuned at r = 4 (the `_lr` searches).
One row per variant, one column per rank: dev accuracy or test BLEU (mean over seeds) and the final training loss,
in the same tidy columns as the paper tables (the claims ledger reads them).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import pandas as pd

from analysis.collect import _jsonl_rows, summarize
from analysis.tables import DASH, TableResult, _out_dir, build, fmt, footer, markdown, write, trainable_ours
from paper import published as paper


OWN_RATE = "own rate"  # a variant run at a rate tuned for it (rank_scaling_rs), not at alpha / r's


def _variant(scaling, lr_ratio_b, own_rate: bool) -> str:
    base = "alpha/sqrt(r)" if scaling == "rs" else "alpha/r"
    ratio = float(lr_ratio_b) if lr_ratio_b is not None and not pd.isna(lr_ratio_b) else 1.0
    base = base if ratio == 1.0 else f"{base}, LoRA+ (B x{ratio:g})"
    return f"{base}, {OWN_RATE}" if own_rate else base


def variants(runs: pd.DataFrame) -> pd.Series:
    """Each rank_scaling run's variant label: its scaling rule, LoRA+'s ratio, and "own rate" when it ran at
    another rate than plain alpha / r's."""
    lrs = pd.to_numeric(runs["lr"], errors="coerce")
    ratios = pd.to_numeric(runs["lr_ratio_b"], errors="coerce").fillna(1.0)
    standard_lr = lrs[runs["scaling"].ne("rs") & ratios.eq(1.0)].mode()  # plain alpha / r's rate
    own = lrs.ne(standard_lr.iloc[0]) if not standard_lr.empty else pd.Series(False, index=runs.index)
    return pd.Series([_variant(s, b, o) for s, b, o in zip(runs["scaling"], runs["lr_ratio_b"], own)],
                     index=runs.index)


def _rank_table(name: str, metric: str, what: str, frame, scale, out_dir=None, results=None) -> TableResult:
    """`metric` (a final.json key, x100 for accuracies) and the final training loss against r, per scaling rule
    and learning rate: alpha / r's rate is the one its runs share; a variant at another rate is its `own rate`."""
    runs = frame[frame["experiment"].eq(name) & frame["scale"].eq(scale)] if not frame.empty else frame
    factor = 100.0 if metric.endswith("accuracy") else 1.0
    tidy, body = [], []
    if not runs.empty:
        runs = runs.assign(variant=variants(runs))
        ranks = sorted({int(r) for r in runs["r"]})
        for variant, group in runs.groupby("variant", sort=True):
            rates = ", ".join(f"{x:g}" for x in sorted(set(pd.to_numeric(group["lr"], errors="coerce").dropna())))
            line = [variant, rates]
            for r in ranks:
                ok = group[(group["r"] == r) & (group["status"] == "success")]
                value, std, n = summarize(ok.get(f"m:{metric}", pd.Series(dtype=float)) * factor)
                loss, _, _ = summarize(ok.get("m:train_loss", pd.Series(dtype=float)))
                eval_n = (int(pd.to_numeric(ok["eval_n"], errors="coerce").min())
                          if "eval_n" in ok and ok["eval_n"].notna().any() else None)
                tidy.append({"table": name, "scale": scale, "row": variant, "column": f"r={r}", "ours_mean": value,
                             "ours_std": std, "n_seeds": n, "eval_n": eval_n, "final_train_loss": loss, "lr": rates})
                line.append(DASH if value is None else f"{fmt(value, 1)} (train loss {fmt(loss, 3)}, n={n})")
            body.append(line)
        header = ["scaling", "learning rate", *[f"r={r}" for r in ranks]]
    else:
        header = ["scaling"]
    title = (f"LoRA's rank under alpha / r, alpha / sqrt(r) and LoRA+ at alpha / r's rate (tuned at a small rank), "
             f"and alpha / sqrt(r) and LoRA+ at their own rates tuned at r = 4 ({what}), scale `{scale}`")
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


def _by_method(name: str, title: str, row_header: str, row_of, frame, scale, out_dir, results,
               note: str = "") -> TableResult:
    """MNLI-m dev accuracy (mean ± std over seeds, n) per method (columns) and per `row_of(runs)` label (rows)."""
    runs = frame[frame["experiment"].eq(name) & frame["scale"].eq(scale)] if not frame.empty else frame
    tidy, body = [], []
    if not runs.empty:
        runs = runs.assign(label=row_of(runs))
        methods = sorted(runs["method"].unique())
        for label, rows in runs.groupby("label", sort=False):
            line = [label]
            for method in methods:
                ok = rows[rows["method"].eq(method) & rows["status"].eq("success")]
                value, std, n = summarize(ok.get("m:eval_accuracy", pd.Series(dtype=float)) * 100.0)
                eval_n = (int(pd.to_numeric(ok["eval_n"], errors="coerce").min())
                          if "eval_n" in ok and ok["eval_n"].notna().any() else None)
                tidy.append({"table": name, "scale": scale, "row": label, "column": method, "ours_mean": value,
                             "ours_std": std, "n_seeds": n, "eval_n": eval_n})
                line.append(DASH if value is None else f"{fmt(value, 1)} ± {fmt(std, 1)} (n={n})")
            body.append(line)
        header = [row_header, *methods]
    else:
        header = [row_header]
    md = markdown(f"{title}, scale `{scale}`", header, body, footer(runs, scale) + note)
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


def grouped_batches(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """MNLI-m dev accuracy with random against length-grouped training batches, per method (issue 19)."""
    def batches(runs):
        group = pd.to_numeric(runs["group_by_length"], errors="coerce").fillna(0).astype(int)
        return ["random" if g == 0 else f"length-grouped ({g} batches)" for g in group]

    return _by_method("grouped_batches", "Random against length-grouped training batches (MNLI-m dev accuracy, %)",
                      "training batches", batches, frame, scale, out_dir, results,
                      "\n\nSpeed: `results/bench/table_runs/` (the runs here ran on machines shared with other runs, "
                      "so their wall times are not a comparison).")


def mnli_full_dev(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """LoRA and full FT at Table 15's MNLI budget, scored on the whole dev-matched split (issue 18)."""
    def dev(runs):
        n = pd.to_numeric(runs["eval_n"], errors="coerce") if "eval_n" in runs else pd.Series(None, index=runs.index)
        return [f"dev-matched, {int(x):,} pairs" if x == x else "dev-matched" for x in n]

    return _by_method("mnli_full_dev", "LoRA and full fine-tuning at Table 15's MNLI budget on the whole "
                      "dev-matched split (accuracy, %)", "evaluated on", dev, frame, scale, out_dir, results)


FULL_TEST = "e2e_full_test"  # the study's folder (conf/tables/table3.yaml): every row below is one of its runs


def e2e_full_test(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """Table 3's full FT, Adapter^L (0.37M) and LoRA rows at its budget, generated for all 630 E2E test MRs."""
    labels = ("GPT-2 M (FT)*", "GPT-2 M (Adapter^L)* 0.37M", "GPT-2 M (LoRA)")
    table = replace(paper.TABLE3, name="e2e_full_test", rows=tuple(r for r in paper.TABLE3.rows if r.label in labels),
                    title="Table 3's rows on all 630 E2E test MRs (Table 3 itself: a sample of 40)")
    return build(table, frame, scale, out_dir, results, (FULL_TEST,), {"trainable (our runs)": trainable_ours})


def e2e_full_test_r(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """Table 18's ranks r = 1, 4, 16, 64 at its budget, generated for all 630 E2E test MRs."""
    labels = ("r=1", "r=4", "r=16", "r=64")
    table = replace(paper.TABLE18, name="e2e_full_test_r",
                    rows=tuple(r for r in paper.TABLE18.rows if r.label in labels),
                    title="Table 18's ranks on all 630 E2E test MRs (Table 18 itself: a sample of 40)")
    return build(table, frame, scale, out_dir, results, (FULL_TEST,))


PLATEAU_TOLERANCE = 0.01  # mnli_plateau's rule (conf/tables/table15.yaml): 1 epoch within this of the best val_loss


def epoch_evaluations(run_dir, epochs=None) -> pd.DataFrame:
    """A run's evaluations after each epoch (metrics.jsonl's eval rows, the final one included), one row per epoch.
    Runs from before the eval rows carried `epoch` (a shared table15_lr run) log only the final one: `epochs`."""
    rows = [r for r in _jsonl_rows(Path(run_dir)) if r.get("split") == "eval"]
    last = max((r["step"] for r in rows), default=None)
    rows = [r if r.get("epoch") is not None or r["step"] != last or epochs is None else r | {"epoch": float(epochs)}
            for r in rows]
    frame = pd.DataFrame([r for r in rows if r.get("epoch") is not None])
    if frame.empty:
        return frame
    return frame.assign(epoch=frame["epoch"].round().astype(int)).drop_duplicates("epoch", keep="last")


def plateau_runs(frame, scale):
    """mnli_plateau's successful runs with their run length in epochs (`run_epochs`): the long runs and the 1-epoch
    runs of the headline budget (mnli_plateau_1_epoch), in one folder."""
    runs = frame[frame["experiment"].eq("mnli_plateau") & frame["scale"].eq(scale)] if not frame.empty else frame
    runs = runs[runs["status"].eq("success")] if len(runs) else runs
    return runs.assign(run_epochs=pd.to_numeric(runs["epochs"], errors="coerce").round().astype("Int64")) \
        if len(runs) else runs


def plateau_evaluations(frame, scale) -> pd.DataFrame:
    """Every mnli_plateau run's evaluations with a val_loss, one row per run and epoch: method, run_epochs, seed,
    epoch, step, val_* and eval_* (the table and the learning-curves figure read these)."""
    runs = plateau_runs(frame, scale)
    parts = [epoch_evaluations(x.run_dir, x.run_epochs).assign(method=x.method, run_epochs=int(x.run_epochs),
                                                                seed=int(x.seed))
             for x in runs.itertuples()] if len(runs) else []
    parts = [p for p in parts if len(p) and "val_loss" in p]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def mnli_plateau(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """Held-out loss (500 train pairs, val_*) after each epoch of the long runs and at the end of the 1-epoch runs,
    per method, mean over seeds; a method's plateau is its long runs' lowest mean val_loss, and the 1-epoch budget
    is at the plateau when its mean val_loss is within PLATEAU_TOLERANCE of it (conf/tables/table15.yaml)."""
    name = "mnli_plateau"
    runs = plateau_runs(frame, scale)
    evaluations = plateau_evaluations(frame, scale)
    tidy, body, verdicts = [], [], []
    for method, by_method in (evaluations.groupby("method", sort=True) if len(evaluations) else []):
        means = {}  # run length -> {epoch: mean val_loss}
        for length, evals in by_method.groupby("run_epochs", sort=True):
            run = f"{length} epoch" + ("" if length == 1 else "s")
            for epoch, at in evals.groupby("epoch", sort=True):
                loss, loss_std, n = summarize(at["val_loss"])
                val_acc, _, _ = summarize(at.get("val_accuracy", pd.Series(dtype=float)) * 100.0)
                dev_acc, dev_std, _ = summarize(at.get("eval_accuracy", pd.Series(dtype=float)) * 100.0)
                means.setdefault(int(length), {})[int(epoch)] = loss
                step = int(at["step"].max())
                tidy.append({"table": name, "scale": scale, "row": f"{method}, {run}", "column": f"epoch {epoch}",
                             "ours_mean": loss, "ours_std": loss_std, "n_seeds": n, "step": step,
                             "val_accuracy": val_acc, "eval_accuracy": dev_acc})
                body.append([method, run, str(epoch), str(step), f"{fmt(loss, 4)} ± {fmt(loss_std, 4)} (n={n})",
                             fmt(val_acc, 1), DASH if dev_acc is None else f"{fmt(dev_acc, 1)} ± {fmt(dev_std, 1)}"])
        longest = max(means, default=None)
        if longest is None or longest == 1:
            continue
        best = min(means[longest], key=means[longest].get)
        line = (f"- {method}: the {longest}-epoch runs' lowest mean val_loss is after epoch {best} "
                f"({fmt(means[longest][best], 4)})")
        if 1 in means.get(1, {}):
            gap = means[1][1] - means[longest][best]
            line += (f"; the 1-epoch runs (the headline budget) end at {fmt(means[1][1], 4)}, {fmt(abs(gap), 4)} "
                     f"{'above' if gap >= 0 else 'below'} it: "
                     + ("at the plateau" if gap <= PLATEAU_TOLERANCE else "not at the plateau")
                     + f" (rule: within {PLATEAU_TOLERANCE})")
        verdicts.append(line)
    header = ["method", "run", "after epoch", "step", "val_loss (500 train pairs held out)", "val accuracy, %",
              "dev-matched accuracy, % (shown, not used to pick)"]
    title = (f"Where the headline MNLI rows' held-out loss stops improving: full FT and LoRA r=8 at their tuned "
             f"rates, 1-epoch runs (the headline budget) and 6-epoch runs scored after each epoch, scale `{scale}`")
    md = markdown(title, header, body, ("\n".join(verdicts) + "\n\n" if verdicts else "") + footer(runs, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


def plateau_recipe(cells: pd.DataFrame, tolerance: float = PLATEAU_TOLERANCE) -> Optional[tuple[float, int]]:
    """mnli_plateau_lr's rule (conf/tables/table15.yaml) for one method's cells (lr, epochs, val_loss): the (rate,
    epochs) of the lowest val_loss, where a cell within `tolerance` of it with fewer epochs wins (then the lower
    val_loss)."""
    scored = cells.dropna(subset=["val_loss"])
    if scored.empty:
        return None
    near = scored[scored["val_loss"] <= scored["val_loss"].min() + tolerance]
    pick = near.sort_values(["epochs", "val_loss"]).iloc[0]
    return float(pick["lr"]), int(pick["epochs"])


def mnli_plateau_lr(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """The rate and budget searched together per method (held-out val_loss, one run per rate and epoch count, each
    with its own schedule), and each method's plateau recipe by plateau_recipe's rule."""
    name = "mnli_plateau_lr"
    runs = frame[frame["experiment"].eq(name) & frame["scale"].eq(scale)] if not frame.empty else frame
    runs = runs[runs["status"].eq("success")] if len(runs) else runs
    tidy, body, picks = [], [], []
    for method, by_method in (runs.groupby("method", sort=True) if len(runs) else []):
        epochs = sorted({int(round(e)) for e in pd.to_numeric(by_method["epochs"], errors="coerce").dropna()})
        cells = []
        for lr, at_lr in by_method.groupby("lr", sort=True):
            line = [method, f"{lr:g}"]
            for e in epochs:
                ok = at_lr[pd.to_numeric(at_lr["epochs"], errors="coerce").round().eq(e)]
                loss, _, n = summarize(ok.get("m:val_loss", pd.Series(dtype=float)))
                acc, _, _ = summarize(ok.get("m:val_accuracy", pd.Series(dtype=float)) * 100.0)
                train, _, _ = summarize(ok.get("m:train_loss", pd.Series(dtype=float)))
                cells.append({"table": name, "scale": scale, "row": method, "column": f"lr={lr:g}, {e} ep.",
                              "lr": float(lr), "epochs": e, "val_loss": loss, "val_accuracy": acc,
                              "final_train_loss": train, "n_seeds": n, "ours_mean": loss})
                line.append(DASH if loss is None else f"{fmt(loss, 4)} (acc {fmt(acc, 1)}, train {fmt(train, 3)})")
            body.append(line)
        recipe = plateau_recipe(pd.DataFrame(cells))
        for c in cells:
            c["recipe"] = recipe == (c["lr"], c["epochs"])
        tidy += cells
        if recipe is not None:
            picks.append(f"- {method}: lr {recipe[0]:g}, {recipe[1]} epoch" + ("" if recipe[1] == 1 else "s"))
    header = ["method", "learning rate", *[f"{e} epoch" + ("" if e == 1 else "s") for e in
                                           sorted({c["epochs"] for c in tidy})]] if tidy else ["method"]
    title = (f"Each method's rate and budget searched together: val_loss on 500 train pairs held out (val accuracy "
             f"and final train loss beside it), scale `{scale}`")
    rule = (f"Plateau recipe per method (lowest val_loss; within {PLATEAU_TOLERANCE} of it, fewer epochs win):\n"
            + "\n".join(picks) + "\n\n") if picks else ""
    md = markdown(title, header, body, rule + footer(runs, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


STUDY_TABLE_FUNCTIONS = {"rank_scaling": rank_scaling, "rank_scaling_e2e": rank_scaling_e2e,
                         "grouped_batches": grouped_batches, "mnli_full_dev": mnli_full_dev,
                         "mnli_plateau": mnli_plateau,
                         "e2e_full_test": e2e_full_test, "e2e_full_test_r": e2e_full_test_r,
                         "mnli_plateau_lr": mnli_plateau_lr}
