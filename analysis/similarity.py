"""Figures 3 and 4 as numbers: φ(1, 1) of the LoRA A matrices, the cell the paper's Section 7.2 states ("share a
subspace of dimension 1 with normalized similarity > 0.5"), in a tidy table the claims ledger reads.

    results/tables/<scale>/subspace_similarity.{md,csv}

Rows, for ΔW_q and ΔW_v: A_{r=8} against A_{r=64} of the same seed (one value per seed: φ(1, 1) averaged over the
layers both adapted), A_{r=64} of two seeds (one value per pair of seeds; pairs share runs), and the null: Gaussian
matrices of the same shapes (one value per draw). Runs come from Table 15's MNLI study, as Table 7's do.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import summarize
from analysis.tables import TableResult, _out_dir, fmt, footer, markdown, write

COLUMN = "φ(1,1)"
NULL_DRAWS = 200


def _phi11_per_layer(a: dict, b: dict, role: str) -> list[float]:
    from analysis import subspace

    return [subspace.phi(subspace.lora_directions(a[key].A), subspace.lora_directions(b[key].A), 1, 1)
            for key in sorted(set(a) & set(b)) if key[1] == role]


def _null(r1: int, r2: int, d: int, seed: int = 1234) -> list[float]:
    """φ(1, 1) of independent Gaussian A (r1 × d, r2 × d): what unrelated directions give (about 1/d)."""
    from analysis import subspace

    rng = np.random.default_rng(seed)
    return [subspace.phi(rng.standard_normal((d, r1)), rng.standard_normal((d, r2)), 1, 1) for _ in range(NULL_DRAWS)]


def subspace_similarity(frame, scale, out_dir=None, results=None, experiments=("table15",),
                        roles=("q", "v"), r1: int = 8, r2: int = 64) -> TableResult:
    from analysis import subspace  # numpy and safetensors only when the table is built

    name = "subspace_similarity"
    runs = frame[frame["scale"].eq(scale) & frame["experiment"].isin(experiments)] if not frame.empty else frame
    small, large = (subspace.lora_runs(runs, r=r, roles=roles) if not runs.empty else runs for r in (r1, r2))
    if len(small) and len(large):  # one model and task: φ across models would mean nothing
        first = large.iloc[0]
        small, large = (x[x["model"].eq(first["model"]) & x["task_key"].eq(first["task_key"])] for x in (small, large))
    adapters = {d: subspace.load_lora(Path(d) / "adapter.safetensors")
                for d in pd.concat([small, large])["run_dir"].unique()} if len(small) + len(large) else {}
    by_seed = {r: {int(x["seed"]): adapters[x["run_dir"]] for _, x in group.iterrows()}
               for r, group in ((r1, small), (r2, large))}
    rows: list[tuple[str, list[float], str]] = []
    for role in roles:
        same = [np.mean(_phi11_per_layer(by_seed[r1][s], by_seed[r2][s], role))
                for s in sorted(set(by_seed[r1]) & set(by_seed[r2]))]
        pairs = list(combinations(sorted(by_seed[r2]), 2))
        across = [np.mean(_phi11_per_layer(by_seed[r2][a], by_seed[r2][b], role)) for a, b in pairs]
        rows.append((f"ΔW_{role}: A_r={r1} vs A_r={r2}, same seed", same,
                     f"seeds {', '.join(map(str, sorted(set(by_seed[r1]) & set(by_seed[r2]))))}", "seeds"))
        rows.append((f"ΔW_{role}: A_r={r2} seed a vs seed b", across,
                     f"pairs {', '.join(f'{a}/{b}' for a, b in pairs)}", "seed pairs"))
    d = next((p.A.shape[1] for a in adapters.values() for p in a.values()), None)
    if d is not None:
        for ra, rb in ((r1, r2), (r2, r2)):
            rows.append((f"random: A_r={ra} vs A_r={rb}", _null(ra, rb, d), f"{NULL_DRAWS} Gaussian draws, d={d}",
                         "Gaussian draws"))
    tidy, body = [], []
    for label, values, over, unit in rows:
        mean, std, n = summarize(values)
        tidy.append({"table": name, "scale": scale, "row": label, "column": COLUMN, "ours_mean": mean,
                     "ours_std": std, "n_seeds": n, "n_of": unit})
        body.append([label, "—" if mean is None else f"{fmt(mean, 3)} ± {fmt(std, 3)} (n={n})", over])
    used = pd.concat([small, large]) if len(small) + len(large) else runs.iloc[0:0]
    md = markdown(f"Figures 3 and 4 as numbers: φ(1, 1) of LoRA's A (mean over layers), the paper's \"> 0.5\" between "
                  f"r = {r1} and r = {r2}, scale `{scale}`", ["comparison", f"{COLUMN} (mean ± std, n)", "over"],
                  body, footer(used, scale))
    tidy_frame = pd.DataFrame(tidy)
    paths = write(_out_dir(out_dir, results, scale), name, md, tidy_frame)
    return TableResult(name, tidy_frame, md, paths)


SIMILARITY_TABLE_FUNCTIONS = {"subspace_similarity": subspace_similarity}
