"""Figures 3/6 (A_{r=8} vs A_{r=64}), 4/7 (two seeds at r=64) and 8 (W vs ΔW with varying r, and random).

Each figure finds its runs in collect's frame by config (method lora, r, targets, seed, same model and task) and
writes PNG + PDF to results/figures/<scale>/ atomically, titled with scale, model, task, layers and seeds. When the
runs it needs are not there it returns a message saying which, and draws nothing.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display here
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import atomic_write, subspace  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


@dataclass
class FigureResult:
    name: str
    paths: tuple[Path, ...]  # empty when not drawn
    message: str  # what was drawn from which runs, or why nothing was


def _save(fig, out_dir: Path, name: str) -> tuple[Path, ...]:
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        # no creation date in the PDF: a figure redrawn from the same runs is the same file
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(atomic_write(out_dir / f"{name}.{ext}", buf.getvalue()))
    plt.close(fig)
    return tuple(paths)


def _layers(pairs: dict, role: str, k: int = 4) -> list[int]:
    """Up to k evenly spaced layers (first and last included), as the paper's 1st, 32nd, 64th, 96th of 96."""
    layers = sorted({l for (l, ro) in pairs if ro == role and l is not None})
    if len(layers) <= k:
        return layers
    return [layers[round(i * (len(layers) - 1) / (k - 1))] for i in range(k)]


def _pairs_of_runs(runs_a: pd.DataFrame, runs_b: pd.DataFrame, same_seed: bool):
    """The first (run a, run b) on the same model and task: same seed, or different seeds when same_seed is False."""
    for _, a in runs_a.iterrows():
        for _, b in runs_b.iterrows():
            if a["run_dir"] == b["run_dir"] or a["model"] != b["model"] or a["task_key"] != b["task_key"]:
                continue
            if (a["seed"] == b["seed"]) == same_seed:
                return a, b
    return None


def _heatmaps(grids: dict, title: str, xlabel: str, ylabel: str):
    roles = sorted({ro for ro, _ in grids}, key=lambda r: "qkvo".find(r) if r in "qkvo" else 9)
    layers = sorted({l for _, l in grids})
    fig, axes = plt.subplots(len(roles), len(layers), figsize=(3.2 * len(layers), 2.6 * len(roles)), squeeze=False,
                             layout="constrained")
    for i, ro in enumerate(roles):
        for j, l in enumerate(layers):
            ax = axes[i][j]
            g = grids.get((ro, l))
            if g is None:
                ax.set_axis_off()
                continue
            im = ax.imshow(g, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper",
                           extent=(0.5, g.shape[1] + 0.5, g.shape[0] + 0.5, 0.5))
            ax.set_title(f"ΔW_{ro}, layer {l}", fontsize=9)
            if i == len(roles) - 1:
                ax.set_xlabel(xlabel, fontsize=8)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="φ")
    fig.suptitle(title, fontsize=10)
    return fig


def _phi_figure(name: str, a, b, scale: str, out_dir: Path, roles: tuple[str, ...], xlabel: str, ylabel: str,
                what: str) -> FigureResult:
    pa, pb = (subspace.load_lora(Path(x["run_dir"]) / "adapter.safetensors") for x in (a, b))
    grids = {}
    for ro in roles:
        for l in _layers(pa, ro):
            if (l, ro) in pb:
                grids[(ro, l)] = subspace.phi_grid(subspace.lora_directions(pa[(l, ro)].A),
                                                   subspace.lora_directions(pb[(l, ro)].A))
    if not grids:
        return FigureResult(name, (), f"{name}: the adapters share no {'/'.join(roles)} layer")
    layers = sorted({l for _, l in grids})
    title = (f"{what} — scale {scale}, {a['model']} on {a['task']}, layers {', '.join(map(str, layers))}, "
             f"seeds {int(a['seed'])}/{int(b['seed'])}")
    paths = _save(_heatmaps(grids, title, xlabel, ylabel), out_dir, name)
    return FigureResult(name, paths, f"{name}: {Path(a['run_dir']).name} vs {Path(b['run_dir']).name}")


def figure3(frame, scale, out_dir: Optional[Path] = None, r1: int = 8, r2: int = 64,
            roles: tuple[str, ...] = ("q", "v")) -> FigureResult:
    """Figure 3/6: φ(A_{r=8}, A_{r=64}, i, j), i ≤ 8, j ≤ 64, for ΔW_q and ΔW_v, same seed."""
    out_dir = Path(out_dir or RESULTS / "figures" / scale)
    runs1, runs2 = (subspace.lora_runs(frame, r=r, roles=roles) for r in (r1, r2))
    pair = _pairs_of_runs(runs1, runs2, same_seed=True) if len(runs1) and len(runs2) else None
    if pair is None:
        return FigureResult("figure3", (), f"figure3: needs successful LoRA runs with an adapter at r={r1} and "
                                           f"r={r2} on {roles[0]} with a common seed, model and task (found "
                                           f"{len(runs1)} at r={r1}, {len(runs2)} at r={r2})")
    return _phi_figure("figure3", *pair, scale, out_dir, roles, f"j (A_r={r2})", f"i (A_r={r1})",
                       f"φ(A_r={r1}, A_r={r2}, i, j)")


def figure4(frame, scale, out_dir: Optional[Path] = None, r: int = 64,
            roles: tuple[str, ...] = ("q", "v")) -> FigureResult:
    """Figure 4/7: φ between A_{r=64} of two randomly seeded runs."""
    out_dir = Path(out_dir or RESULTS / "figures" / scale)
    runs = subspace.lora_runs(frame, r=r, roles=roles)
    pair = _pairs_of_runs(runs, runs, same_seed=False) if len(runs) > 1 else None
    if pair is None:
        return FigureResult("figure4", (), f"figure4: needs two successful LoRA runs with an adapter at r={r} on "
                                           f"{roles[0]} with different seeds, same model and task (found {len(runs)})")
    return _phi_figure("figure4", *pair, scale, out_dir, roles, "j (seed b)", "i (seed a)",
                       f"φ(A_r={r} seed a, A_r={r} seed b, i, j)")


def figure8(frame, scale, out_dir: Optional[Path] = None, role: str = "q", layer: Optional[int] = None,
            imax: int = 512, jmax: int = 64, seed: int = 1234, roles: tuple[str, ...] = ("q", "v")) -> FigureResult:
    """Figure 8: φ(W_q, ΔW_q, i, j) (left singular directions) for every rank r we ran, and a random matrix; runs
    that adapted exactly `roles` (the paper's W_q, W_v)."""
    out_dir = Path(out_dir or RESULTS / "figures" / scale)
    runs = subspace.lora_runs(frame, roles=roles)
    if len(runs):
        runs = runs[runs["run_dir"].map(lambda d: (Path(d) / "base_weights.safetensors").exists())]
    if not len(runs):
        return FigureResult("figure8", (), "figure8: needs successful LoRA runs on "
                                           f"{role} that saved base_weights.safetensors (found none)")
    first = runs.iloc[0]
    runs = runs[runs["model"].eq(first["model"]) & runs["task_key"].eq(first["task_key"])]
    runs = runs.drop_duplicates("r").sort_values("r")  # one seed per rank: the lowest
    panels, used_layer, W = [], None, None
    for _, run in runs.iterrows():
        pairs = subspace.load_lora(Path(run["run_dir"]) / "adapter.safetensors")
        used_layer = subspace.pick_layer(pairs, role, layer)
        pair = pairs[(used_layer, role)]
        W = subspace.base_weight(Path(run["run_dir"]) / "base_weights.safetensors", pair)
        dW = pair.delta(subspace.scaling_of(run))
        panels.append((f"ΔW_{role}, r={int(run['r'])}",
                       subspace.phi_grid(W, dW, imax, min(jmax, int(run["r"])))))
    rand = np.random.default_rng(seed).standard_normal(W.shape)
    panels.append((f"random, j ≤ {min(jmax, int(runs['r'].max()))}",
                   subspace.phi_grid(W, rand, imax, min(jmax, int(runs["r"].max())))))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 0.9 * len(panels)), squeeze=False,
                             layout="constrained")
    for ax, (label, g) in zip(axes[:, 0], panels):
        im = ax.imshow(g.T, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper",
                       extent=(0.5, g.shape[0] + 0.5, g.shape[1] + 0.5, 0.5))
        ax.set_ylabel(f"j ({label})", fontsize=7)
    axes[-1, 0].set_xlabel(f"i (top singular directions of W_{role})")
    fig.colorbar(im, ax=axes, shrink=0.8, label="φ")
    fig.suptitle(f"φ(W_{role}, ΔW_{role}, i, j) — scale {scale}, {first['model']} on {first['task']}, layer "
                 f"{used_layer}, seeds {', '.join(str(int(s)) for s in runs['seed'])}", fontsize=10)
    paths = _save(fig, out_dir, "figure8")
    return FigureResult("figure8", paths, f"figure8: r = {', '.join(str(int(r)) for r in runs['r'])}, layer "
                                          f"{used_layer}")


def rank_scaling_subspace(frame, scale, out_dir: Optional[Path] = None, r1: int = 4, r2: int = 64, seed: int = 0,
                          roles: tuple[str, ...] = ("q", "v")) -> FigureResult:
    """Figure 3 for the variants of the rank_scaling study (issue 20): φ(A_{r1}, A_{r2}, i, j) of one seed, per
    scaling rule and rate (alpha / r, alpha / sqrt(r), LoRA+), ΔW_q and ΔW_v, averaged over the layers."""
    from analysis.studies import variants

    out_dir = Path(out_dir or RESULTS / "figures" / scale)
    runs = frame[frame["experiment"].eq("rank_scaling") & frame["scale"].eq(scale)] if not frame.empty else frame
    runs = subspace.lora_runs(runs, roles=roles, seed=seed, variants=True) if len(runs) else runs
    if len(runs):
        runs = runs.assign(variant=variants(runs))
    panels = []  # (variant, role, grid)
    for variant, group in (runs.groupby("variant", sort=True) if len(runs) else []):
        by_r = {int(x["r"]): subspace.load_lora(Path(x["run_dir"]) / "adapter.safetensors")
                for _, x in group.iterrows() if int(x["r"]) in (r1, r2)}
        if len(by_r) < 2:
            continue
        for role in roles:
            keys = sorted(k for k in set(by_r[r1]) & set(by_r[r2]) if k[1] == role)
            grids = [subspace.phi_grid(subspace.lora_directions(by_r[r1][k].A), subspace.lora_directions(by_r[r2][k].A))
                     for k in keys]
            panels.append((variant, role, np.mean(grids, axis=0)))
    if not panels:
        return FigureResult("rank_scaling_subspace", (), "rank_scaling_subspace: needs rank_scaling runs with "
                                                         f"adapters at r={r1} and r={r2}, seed {seed}, per variant")
    names = sorted({v for v, _, _ in panels})
    fig, axes = plt.subplots(len(names), len(roles), figsize=(4.2 * len(roles), 1.6 + 1.1 * len(names)),
                             squeeze=False, layout="constrained")
    for v, role, g in panels:
        ax = axes[names.index(v)][roles.index(role)]
        im = ax.imshow(g, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper",
                       extent=(0.5, g.shape[1] + 0.5, g.shape[0] + 0.5, 0.5))
        ax.set_title(f"{v}: ΔW_{role}, φ(1,1) = {g[0, 0]:.2f}", fontsize=8)
        ax.set_ylabel(f"i (A_r={r1})", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(f"j (A_r={r2})", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="φ")
    first = runs.iloc[0]
    fig.suptitle(f"φ(A_r={r1}, A_r={r2}, i, j) per LoRA variant (mean over layers) — scale {scale}, {first['model']} "
                 f"on {first['task']}, seed {seed}", fontsize=10)
    paths = _save(fig, out_dir, "rank_scaling_subspace")
    return FigureResult("rank_scaling_subspace", paths, f"rank_scaling_subspace: {', '.join(names)}")


# the headline comparisons of the claims ledger: (panel title, experiment, task, [(label, method, r)])
HEADLINES = (("MNLI (Table 2)", "table2", "mnli", (("full FT", "full", None), ("LoRA r=8", "lora", 8))),
             ("E2E (Table 3)", "table3", "e2e", (("full FT", "full", None), ("LoRA r=4", "lora", 4))))


def _train_curve(run_dir) -> pd.Series:
    from analysis.collect import _jsonl_rows

    rows = [r for r in _jsonl_rows(Path(run_dir)) if r.get("split") == "train" and "loss" in r]
    return pd.Series({int(r["step"]): float(r["loss"]) for r in rows}, dtype=float)


def _plateau_curves(runs, scale) -> list:
    """mnli_plateau's val_loss after each epoch, per method, run length and seed (the table reads the same rows)."""
    from analysis.studies import plateau_evaluations

    evaluations = plateau_evaluations(runs, scale)
    return [(method, int(length), {int(seed): pd.Series(ev["val_loss"].to_numpy(float), index=ev["epoch"].to_numpy())
                                   for seed, ev in group.groupby("seed", sort=True)})
            for (method, length), group in (evaluations.groupby(["method", "run_epochs"], sort=True)
                                            if len(evaluations) else [])]


def learning_curves(frame, scale, out_dir: Optional[Path] = None) -> FigureResult:
    """The training loss of the ledger's headline rows against the step, every seed (metrics.jsonl), and how much
    it still fell over the last third of the run: a number from a run whose loss is still falling is not a plateau."""
    out_dir = Path(out_dir or RESULTS / "figures" / scale)
    runs = frame[frame["scale"].eq(scale) & frame["status"].eq("success")] if not frame.empty else frame
    panels = []  # (title, [(label, {seed: curve})])
    for title, experiment, task, rows in HEADLINES:
        lines = []
        for label, method, r in rows:
            hit = runs[runs["experiment"].eq(experiment) & runs["task_key"].eq(task) & runs["method"].eq(method)] \
                if len(runs) else runs
            if r is not None and len(hit):
                hit = hit[hit["r"].eq(r) & hit["targets"].eq("q,v")]
            if len(hit) and "lr_ratio_b" in hit:  # the paper's LoRA, not rank_scaling's variants
                hit = hit[hit["lr_ratio_b"].map(lambda v: v is None or v != v or v == 1.0)]
            curves = {int(x["seed"]): _train_curve(x["run_dir"]) for _, x in hit.drop_duplicates("seed").iterrows()}
            curves = {k: v for k, v in curves.items() if len(v) >= 3}
            if curves:
                lines.append((label, curves))
        if lines:
            panels.append((title, lines))
    held_out = _plateau_curves(runs, scale)
    if not panels and not held_out:
        return FigureResult("learning_curves", (), "learning_curves: needs successful headline runs (table2 MNLI full "
                                                   "and LoRA r=8, table3 full and LoRA r=4) with metrics.jsonl")
    n_axes = len(panels) + bool(held_out)
    fig, axes = plt.subplots(1, n_axes, figsize=(5.2 * n_axes, 3.6), squeeze=False, layout="constrained")
    notes = []
    if held_out:
        ax = axes[0][-1]
        colors = dict(zip(sorted({m for m, _, _ in held_out}), ("tab:blue", "tab:orange", "tab:green")))
        for method, length, curves in held_out:
            for i, curve in enumerate(curves.values()):  # a 1-epoch run is one point: the headline budget's end
                ax.plot(curve.index, curve.values, "o-" if length > 1 else "x", color=colors[method], alpha=0.6,
                        lw=1, ms=3 if length > 1 else 7, label=f"{method}, {length} ep." if i == 0 else None)
        ax.set_title("MNLI held-out loss (mnli_plateau)", fontsize=10)
        ax.set_xlabel("epoch (the headline rows train 1)")
        ax.set_ylabel("val_loss, 500 train pairs held out")
        ax.legend(fontsize=8)
    for ax, (title, lines) in zip(axes[0], panels):
        for (label, curves), color in zip(lines, ("tab:blue", "tab:orange", "tab:green")):
            drops = []
            for i, curve in enumerate(curves.values()):
                ax.plot(curve.index, curve.values, color=color, alpha=0.5, lw=1, label=label if i == 0 else None)
                third = curve[curve.index >= curve.index.max() * 2 / 3]
                drops.append(100 * (third.iloc[0] - third.iloc[-1]) / third.iloc[0])
            notes.append(f"{title} {label}: the last third of the run lowered the loss {np.mean(drops):.1f}% "
                         f"(seeds {min(drops):.1f} to {max(drops):.1f}%, n={len(drops)})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (mean of 10 steps)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Training loss of the headline rows and held-out loss of longer runs, every seed — scale {scale}",
                 fontsize=10)
    paths = _save(fig, out_dir, "learning_curves")
    return FigureResult("learning_curves", paths, "learning_curves: " + "; ".join(notes))


FIGURE_FUNCTIONS = {"figure3": figure3, "figure4": figure4, "figure8": figure8,
                    "rank_scaling_subspace": rank_scaling_subspace, "learning_curves": learning_curves}
