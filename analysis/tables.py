"""The paper's tables with our numbers beside them: results/tables/<scale>/<table>.{md,csv}.

One function per table (table15, table16, table5, table6, table18, table3, table14, table2, table17, table7). Each
takes the frame of `collect.collect`, finds the runs of every published cell by config (method and its
hyperparameters, task, MNLI-n, model; see `cell_runs`), and writes
- `<table>.md`: per paper column three columns, paper | ours (mean ± sample std over seeds, n seeds) | ours − paper;
  a cell without a number says why: missing (no run), incomplete (no final.json yet), failed, diverged, "needs
  the hub" (data not available offline), "needs <model>" (a paper model no smaller model stands in for); and a
  footer: scale, models and their notes, data sizes, seeds, steps, wall time, every deviation of the scale;
- `<table>.csv`: the same cells, one per line (tidy), numbers unformatted.

Runs are looked for in the experiment named like the table (experiment=table15 ...; Tables 5 and 6: table15's, whose
MNLI study they extend); `experiments=` overrides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from analysis import atomic_write
from paper import published as paper
from analysis.collect import best_epoch_values, is_full, metric_values, summarize, targets_key
from paper.published import PAPER_MODELS, Column, PaperTable, Row

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
DASH = "—"
# Table 15's parameter column at GPT-3 size comes from experiments/param_table.py's machine-readable output (columns
# table, model, method, hyperparameters, paper, ours); its "method hyperparameters" spell paper.py's row label.
PARAMS_CSV = "tables/params.csv"


# ------------------------------------------------------------------------------------------- matching runs
def _hp_equal(ours: Any, theirs: Any) -> bool:
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return False
    if isinstance(theirs, (tuple, list)):
        return targets_key(ours) == targets_key(theirs)
    try:
        return float(ours) == float(theirs)
    except (TypeError, ValueError):
        return str(ours) == str(theirs)


def model_fits(run_model: Any, row: Row) -> bool:
    """A run fills a row on the row's own paper model, or on a smaller stand-in model where the row allows one."""
    return run_model == row.model or (run_model not in PAPER_MODELS and row.stand_in)


def cell_runs(frame: pd.DataFrame, table: PaperTable, row: Row, col: Column,
              experiments: Optional[tuple[str, ...]] = None) -> pd.DataFrame:
    """The runs (any status) whose config is this published cell's: experiment, model, method + hyperparameters,
    task and, for tables with MNLI-n columns, n."""
    if frame.empty:
        return frame
    task, _ = table.cell_task(row, col)
    keep = frame["method"].eq(row.method) & frame["task_key"].eq(task)
    keep &= frame["model"].map(lambda m: model_fits(m, row))
    if experiments is not None:
        keep &= frame["experiment"].isin(experiments)
    for key, value in table.cell_hparams(row, col).items():
        keep &= frame[key].map(lambda v, value=value: _hp_equal(v, value)) if key in frame else False
    if any(c.n is not None for c in table.columns):  # only tables with MNLI-n columns tell runs apart by n
        keep &= frame["n"].map(lambda n: is_full(n) if col.n is None else (not is_full(n) and int(n) == col.n))
    return frame[keep]


# ------------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    row: str
    column: str
    paper: Optional[float]
    paper_std: Optional[float]
    mean: Optional[float]
    std: Optional[float]
    n_seeds: int
    seeds: tuple
    status: str  # ok | missing | incomplete | failed | diverged | needs the hub | needs <model> | mixed text
    text: str  # what the ours column shows
    diff: Optional[float]
    decimals: int
    median: Optional[float] = None  # tables whose center is the median (the diff is taken from it)


def fmt(v: Optional[float], d: int, sign: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return DASH
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def fmt_mean(mean: float, std: Optional[float], n: int, d: int) -> str:
    return f"{fmt(mean, d)} ± {fmt(std, d)} (n={n})" if std is not None else f"{fmt(mean, d)} (n={n})"


def _others(runs: pd.DataFrame) -> str:
    """'failed', 'failed ×2, diverged', ... for the runs that did not succeed."""
    parts = []
    for status in ("failed", "diverged", "incomplete", "damaged"):
        k = int((runs["status"] == status).sum())
        if k:
            parts.append(status if k == 1 else f"{status} ×{k}")
    unknown = runs[~runs["status"].isin(["success", "failed", "diverged", "incomplete", "damaged"])]
    parts += sorted({str(s) for s in unknown["status"]})
    return ", ".join(parts)


def make_cell(runs: pd.DataFrame, row: Row, col: Column, value: Optional[float], std: Optional[float],
              scale: str, needs_hub: bool, metric_fn: Optional[Callable[[pd.DataFrame], pd.Series]] = None,
              center: str = "mean") -> Cell:
    d = col.decimals
    base = dict(row=row.label, column=col.label, paper=value, paper_std=std, decimals=d)
    if runs.empty:
        if needs_hub and scale != "paper":
            why = "needs the hub"
        elif row.model in PAPER_MODELS and not row.stand_in and scale != "paper":
            why = f"needs {row.model}"
        else:
            why = "missing"
        return Cell(**base, mean=None, std=None, n_seeds=0, seeds=(), status=why, text=why, diff=None)
    values = metric_fn(runs) if metric_fn else metric_values(runs, col.metric, col.unit, col.split)
    ok = runs["status"].eq("success")
    best = best_epoch_values(runs, col.metric, col.unit, col.split) if not metric_fn else values * float("nan")
    final_note = ""
    if best[ok].notna().any():  # evaluated every epoch: the paper reports each seed's best epoch, final beside it
        final = values[ok].dropna()
        final_note = f"; final {fmt(float(final.median() if center == 'median' else final.mean()), d)}"
        values = best.fillna(values)
    mean, sd, n = summarize(values[ok])
    others = _others(runs)
    seeds = tuple(sorted(int(s) for s in runs.loc[ok & values.notna(), "seed"].dropna()))
    if n == 0:
        text = others or f"no {col.metric} in final.json"
        return Cell(**base, mean=None, std=None, n_seeds=0, seeds=(), status=text, text=text, diff=None)
    shown = float(values[ok].dropna().median()) if center == "median" else mean
    text = fmt_mean(shown, sd, n, d) + (" median" if center == "median" and n > 1 else "") + \
        (" best epoch" + final_note if final_note else "") + (f"; {others}" if others else "")
    diff = shown - value if value is not None else None
    return Cell(**base, mean=mean, std=sd, n_seeds=n, seeds=seeds, status="ok", text=text, diff=diff,
                median=shown if center == "median" else None)


def paper_text(value: Optional[float], std: Optional[float], d: int) -> str:
    if value is None:
        return DASH
    return f"{fmt(value, d)} ± {fmt(std, d)}" if std is not None else fmt(value, d)


# ------------------------------------------------------------------------------------------------- footer
def _fmt_seconds(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _span(values: pd.Series, fmt: str = "") -> str:
    """'94' or '60–94' over a column's finite values (what the runs did), '—' when none has it."""
    got = sorted({int(v) for v in pd.to_numeric(values, errors="coerce").dropna()})
    if not got:
        return DASH
    return format(got[0], fmt) if len(got) == 1 else f"{got[0]:{fmt}}–{got[-1]:{fmt}}"


def footer(runs: pd.DataFrame, scale: str, table: Optional[PaperTable] = None) -> str:
    """Where our numbers come from: scale, models, data, seeds, steps, wall time, deviations (from the configs)."""
    lines = [f"**Scale `{scale}`.**" + ("" if scale == "paper" else
                                        " Not the paper's setting: every difference is listed below; a number "
                                        "here is not a paper-scale number.")]
    if runs.empty:
        lines.append("- No runs found for this table.")
    else:
        models = sorted({f"`{m}`" + (f" ({n})" if isinstance(n, str) and n else "")
                         for m, n in zip(runs["model"], runs["model_note"]) if m is not None})
        lines.append("- Models: " + "; ".join(models))
        data = sorted({f"{t}" + (f" ({d})" if d else "") for t, d in zip(runs["task"], runs["data"]) if t})
        lines.append("- Data: " + ("; ".join(data) if data else DASH))
        seeds = sorted({int(s) for s in runs["seed"].dropna()})
        lines.append(f"- Seeds: {', '.join(map(str, seeds)) or DASH} (each cell says how many of them it averages; "
                     "± is the sample standard deviation over seeds)")
        lines.append(f"- Steps (last logged): {_span(runs['steps'])} optimizer steps at batch "
                     f"{_span(runs['batch_size'])} on {_span(runs['train_examples'], ',')} training examples")
        wall = pd.to_numeric(runs["wall_time_s"], errors="coerce").dropna()
        lines.append(f"- Wall time: {_fmt_seconds(float(wall.sum()))} over {len(wall)} finished runs")
        counts = runs["status"].value_counts()
        lines.append("- Runs: " + ", ".join(f"{k} {int(v)}" for k, v in counts.items()))
        devs = list(dict.fromkeys(d for ds in runs["deviations"] for d in (ds or ())))
        lines.append("- Deviations from the paper:" + ("".join(f"\n  - {d}" for d in devs) if devs else " none listed"))
    if table is not None and table.note:
        lines.append(f"- Paper: {table.note}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- writing
def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|")


def markdown(title: str, header: list[str], body: list[list[str]], foot: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(map(_md_escape, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in body]
    return "\n".join(lines) + "\n\n" + foot


def write(out_dir: Path, name: str, md: str, tidy: pd.DataFrame) -> tuple[Path, Path]:
    md_path = atomic_write(out_dir / f"{name}.md", md)
    csv_path = atomic_write(out_dir / f"{name}.csv", tidy.to_csv(index=False))
    return md_path, csv_path


@dataclass
class TableResult:
    name: str
    cells: pd.DataFrame  # tidy: one line per published cell
    markdown: str
    paths: tuple[Path, ...]


def _out_dir(out_dir: Optional[Path], results: Optional[Path], scale: str) -> Path:
    return Path(out_dir) if out_dir else Path(results or RESULTS) / "tables" / scale


# -------------------------------------------------------------------------------------- the generic builder
def build(table: PaperTable, frame: pd.DataFrame, scale: str, out_dir: Optional[Path] = None,
          results: Optional[Path] = None, experiments: Optional[tuple[str, ...]] = None,
          extra: Optional[dict[str, Callable[[Row, pd.DataFrame], str]]] = None) -> TableResult:
    """Paper beside ours for every cell of `table`; `extra` adds per-row columns (name -> f(row, row's runs))."""
    experiments = experiments if experiments is not None else (table.name,)
    scale_frame = frame[frame["scale"].eq(scale)] if not frame.empty else frame
    cells: list[Cell] = []
    used = []
    eval_n: dict[tuple[str, str], Optional[int]] = {}  # examples each cell's metric is computed on (binomial error)
    for row in table.rows:
        row_cells = {}
        for col in table.columns:
            v, s = table.values.get((row.label, col.label), (None, None))
            if col.metric == "average":
                continue
            runs = cell_runs(scale_frame, table, row, col, experiments)
            used.append(runs)
            ok = runs[runs["status"] == "success"] if not runs.empty else runs
            eval_n[(row.label, col.label)] = (int(pd.to_numeric(ok["eval_n"], errors="coerce").min())
                                              if not ok.empty and ok["eval_n"].notna().any() else None)
            row_cells[col.label] = make_cell(runs, row, col, v, s, scale, table.cell_task(row, col)[1],
                                             center=table.center)
        for col in table.columns:  # GLUE's Avg.: over the task columns, only where every one has a number
            if col.metric != "average":
                continue
            v, s = table.values.get((row.label, col.label), (None, None))
            means = [c.median if c.median is not None else c.mean for c in row_cells.values()]
            if not any(m is not None for m in means):  # nothing ran: say why as the task cells do
                first = next(iter(row_cells.values()))
                row_cells[col.label] = Cell(row.label, col.label, v, s, None, None, 0, (), first.status,
                                            first.status, None, col.decimals)
            elif all(m is not None for m in means):
                mean = sum(means) / len(means)
                row_cells[col.label] = Cell(row.label, col.label, v, s, mean, None, 0, (), "ok",
                                            fmt(mean, col.decimals), None if v is None else mean - v, col.decimals)
            else:
                row_cells[col.label] = Cell(row.label, col.label, v, s, None, None, 0, (), "partial",
                                            f"needs all {len(row_cells)} tasks", None, col.decimals)
        cells += [row_cells[c.label] for c in table.columns]
    runs_used = pd.concat(used).drop_duplicates("run_dir") if used and any(len(u) for u in used) else \
        scale_frame.iloc[0:0]

    extra = extra or {}
    header = ["row"] + (["params (paper)"] if any(r.params for r in table.rows) else []) + list(extra)
    for col in table.columns:
        header += [f"{col.label} paper", f"{col.label} ours", f"{col.label} Δ"]
    by_row = {}
    for c in cells:
        by_row.setdefault(c.row, []).append(c)
    body = []
    for row in table.rows:
        line = [row.label] + ([row.params or DASH] if "params (paper)" in header else [])
        row_runs = runs_used[runs_used["run_dir"].isin(
            set().union(*[set(cell_runs(scale_frame, table, row, col, experiments)["run_dir"])
                          for col in table.columns if col.metric != "average"]))] if extra else None
        line += [f(row, row_runs) for f in extra.values()]
        for c in by_row[row.label]:
            line += [paper_text(c.paper, c.paper_std, c.decimals), c.text, fmt(c.diff, c.decimals, sign=True)]
        body.append(line)

    tidy = pd.DataFrame([{"table": table.name, "scale": scale, "row": c.row, "column": c.column, "paper": c.paper,
                          "paper_std": c.paper_std, "ours_mean": c.mean, "ours_std": c.std, "n_seeds": c.n_seeds,
                          "seeds": " ".join(map(str, c.seeds)), "status": c.status, "ours": c.text,
                          "diff": c.diff, "eval_n": eval_n.get((c.row, c.column)), "ours_median": c.median}
                         for c in cells])
    md = markdown(f"{table.title} — paper vs ours, scale `{scale}`", header, body, footer(runs_used, scale, table))
    paths = write(_out_dir(out_dir, results, scale), table.name, md, tidy)
    return TableResult(table.name, tidy, md, paths)


# ------------------------------------------------------------------------------------- per-row extra columns
def _fmt_count(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x / 1e9:.1f}B" if x >= 1e9 else f"{x / 1e6:.2f}M" if x >= 1e5 else f"{int(x):,}"


def trainable_ours(row: Row, runs: pd.DataFrame) -> str:
    """Trainable parameters of our runs of this row (their final.json), on the model they ran."""
    vals = sorted({int(v) for v in pd.to_numeric(runs["trainable"], errors="coerce").dropna()})
    return " / ".join(_fmt_count(v) for v in vals) if vals else DASH


def params_at_paper_size(results: Path) -> Callable[[Row, pd.DataFrame], str]:
    """Our count at the paper model's size, from results/tables/params.csv (experiments.param_table) if present."""
    path = Path(results) / PARAMS_CSV
    counts: dict[tuple[str, str], str] = {}
    if path.exists():
        try:
            p = pd.read_csv(path, dtype=str).fillna("")
            for _, r in p.iterrows():
                hyper = "" if r.get("hyperparameters", "") in ("", "-", "–", DASH) else r["hyperparameters"]
                label = f"{r['method']} {hyper}".strip()
                counts.setdefault((str(r.get("table", "")).split("(")[0].strip(), label), r.get("ours", ""))
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            counts = {}

    def f(row: Row, runs: pd.DataFrame) -> str:
        v = counts.get(("Table 15", row.label))
        return _fmt_count(v.replace(",", "")) if v else DASH
    return f


# ------------------------------------------------------------------------------------------ one per table
def table15(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    """GPT-3 hyperparameter analysis: WikiSQL ("needs the hub" below paper scale), MNLI-m, parameter counts."""
    extra = {"params (ours, GPT-3 size)": params_at_paper_size(Path(results or RESULTS)),
             "trainable (our runs)": trainable_ours}
    return build(paper.TABLE15, frame, scale, out_dir, results, experiments, extra)


def table16(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    return build(paper.TABLE16, frame, scale, out_dir, results, experiments)


# Tables 5 and 6 are more rows of Table 15's MNLI study: their sweeps run into its folder (conf/tables/table15.yaml)
def table5(frame, scale, out_dir=None, results=None, experiments=("table15",)) -> TableResult:
    return build(paper.TABLE5, frame, scale, out_dir, results, experiments, {"trainable (our runs)": trainable_ours})


def table6(frame, scale, out_dir=None, results=None, experiments=("table15",)) -> TableResult:
    return build(paper.TABLE6, frame, scale, out_dir, results, experiments)


def table18(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    return build(paper.TABLE18, frame, scale, out_dir, results, experiments)


def table3(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    return build(paper.TABLE3, frame, scale, out_dir, results, experiments, {"trainable (our runs)": trainable_ours})


def table14(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    return build(paper.TABLE14, frame, scale, out_dir, results, experiments, {"trainable (our runs)": trainable_ours})


def table2(frame, scale, out_dir=None, results=None, experiments=None) -> TableResult:
    return build(paper.TABLE2, frame, scale, out_dir, results, experiments, {"trainable (our runs)": trainable_ours})


def _config_value(runs: pd.DataFrame, key: str) -> list:
    for col in (key, f"cfg:train.{key}", f"cfg:method.{key}", f"cfg:task.{key}", f"cfg:{key}"):
        if col in runs.columns:
            return sorted({v for v in runs[col] if v is not None and not (isinstance(v, float) and math.isnan(v))},
                          key=str)
    return []


def _epochs_run(runs: pd.DataFrame) -> list:
    """Epochs each run trained (steps × batch × grad_accum / n), where its final.json says how many steps."""
    out = set()
    for _, run in runs.iterrows():
        steps, n, batch = run.get("steps"), run.get("n"), run.get("cfg:train.batch_size")
        accum = run.get("cfg:train.grad_accum", 1)
        if any(v is None or v != v for v in (steps, n, batch)) or is_full(n):
            return []
        out.add(round(float(steps) * float(batch) * float(accum or 1) / float(n), 2))
    return sorted(out)


def table17(frame, scale, out_dir=None, results=None, experiments=("table16",)) -> TableResult:
    """Table 16's hyperparameters: the paper's beside those in the configs of our Table 16 runs (same/differs)."""
    scale_frame = frame[frame["scale"].eq(scale)] if not frame.empty else frame
    if experiments is not None and not scale_frame.empty:
        scale_frame = scale_frame[scale_frame["experiment"].isin(experiments)]
    methods = {"full": "Fine-Tune", "prefix_embed": "PrefixEmbed", "prefix_layer": "PrefixLayer", "lora": "LoRA"}
    cols = [c for c in paper.TABLE16.columns]
    header, body, tidy = ["hyperparameter", "adaptation"], [], []
    for c in cols:
        header += [f"{c.label} paper", f"{c.label} ours", f"{c.label} same?"]
    for h in paper.TABLE17:
        line = [h.label, methods.get(h.method, DASH) if h.method else DASH]
        for c in cols:
            runs = scale_frame
            if not runs.empty:
                runs = runs[runs["n"].map(lambda n: is_full(n) if c.n is None else (not is_full(n) and int(n) == c.n))]
                if h.method:
                    runs = runs[runs["method"].eq(h.method)]
            ours = _config_value(runs, h.config_key) if not runs.empty else []
            if h.config_key == "epochs" and not runs.empty:  # what ran: a scale's step cap can cut the epochs
                ours = _epochs_run(runs) or ours
            theirs = h.values[c.n]
            if runs.empty:
                text, same = "missing", DASH
            elif not ours:
                text, same = f"not in config ({h.config_key})", DASH
            else:
                text = ", ".join(map(str, ours))
                same = "same" if len(ours) == 1 and _hp_equal(ours[0], theirs) else "differs"
            line += [str(theirs), text, same]
            tidy.append({"table": "table17", "scale": scale, "row": f"{h.label} ({h.method or 'all'})",
                         "column": c.label, "paper": theirs, "ours": text, "same": same})
        body.append(line)
    md = markdown(f"Table 17: hyperparameters of the MNLI-n runs — paper vs ours, scale `{scale}`", header, body,
                  footer(scale_frame, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), "table17", md, tidy_frame)
    return TableResult("table17", tidy_frame, md, paths)


def table7(frame, scale, out_dir=None, results=None, experiments=("table15",), layer: Optional[int] = None,
           role: str = "q") -> TableResult:
    """ΔW_q vs W_q (Table 7) and the amplification factor (H.4) from our LoRA runs at r=4 and r=64 that saved
    `base_weights.safetensors`; the layer is the middle one (the paper's 48th of 96) unless given. Runs come from
    one study (default Table 15's MNLI folder): averaging ΔW of different models or tasks would mean nothing."""
    from analysis import subspace  # torch is needed here only

    scale_frame = frame[frame["scale"].eq(scale)] if not frame.empty else frame
    if experiments is not None and not scale_frame.empty:
        scale_frame = scale_frame[scale_frame["experiment"].isin(experiments)]
    header = ["r", "quantity", "paper", "ours", "ours − paper"]
    body, tidy, used = [], [], []
    names = [("delta", "‖UᵀW_qVᵀ‖_F, U,V of ΔW_q"), ("w", "‖UᵀW_qVᵀ‖_F, U,V of W_q"),
             ("random", "‖UᵀW_qVᵀ‖_F, U,V of a random matrix"), ("norm_w", "‖W_q‖_F"),
             ("norm_delta", "‖ΔW_q‖_F"), ("amplification", "amplification ‖ΔW_q‖_F / ‖UᵀW_qVᵀ‖_F")]
    for pub in paper.TABLE7:
        # the paper's ΔW_q comes from adapting W_q and W_v: other target sets at the same r are other experiments
        runs = subspace.lora_runs(scale_frame, r=pub.r, roles=("q", "v")) if not scale_frame.empty else scale_frame
        used.append(runs)
        found, why = [], "missing" if runs.empty else ""
        for _, run in runs.iterrows():
            try:
                found.append(subspace.delta_vs_w_of_run(run, layer=layer, role=role))
            except (FileNotFoundError, KeyError, ValueError) as e:
                why = f"unavailable: {e}"
        for key, label in names:
            theirs = getattr(pub, key)
            mean, sd, n = summarize(getattr(f, key) for f in found)
            ours = fmt_mean(mean, sd, n, 2) if n else (why or "missing")
            diff = None if mean is None else mean - theirs
            body.append([str(pub.r), label, fmt(theirs, 2), ours, fmt(diff, 2, sign=True)])
            tidy.append({"table": "table7", "scale": scale, "row": f"r={pub.r}", "column": key, "paper": theirs,
                         "ours_mean": mean, "ours_std": sd, "n_seeds": n, "ours": ours, "diff": diff})
    runs_used = pd.concat(used) if used and any(len(u) for u in used) else scale_frame.iloc[0:0]
    where = f"layer {layer}" if layer is not None else "the middle layer"
    md = markdown(f"Table 7: ΔW_q vs W_q ({where}) — paper (GPT-3 175B, its 48th of 96 layers) vs ours, "
                  f"scale `{scale}`", header, body, footer(runs_used, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), "table7", md, tidy_frame)
    return TableResult("table7", tidy_frame, md, paths)


# the paper's tables; analysis/catalog.py adds the learning-rate searches (analysis/lr_search.py)
PAPER_TABLE_FUNCTIONS: dict[str, Callable[..., TableResult]] = {
    "table15": table15, "table16": table16, "table17": table17, "table5": table5, "table6": table6,
    "table18": table18, "table3": table3, "table14": table14, "table2": table2, "table7": table7}
