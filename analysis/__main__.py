"""python -m analysis tables --scale local [--table table15] [--force] | figures --scale local [--figure figure3]
                   | claims --scale local   (results/claims.md and the README's findings block)

A table is rebuilt into a temporary folder first and replaces the committed one only when it fills at least as many
cells (runs of earlier sessions may be missing here); otherwise it says which cells it would drop and needs --force.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from analysis.collect import collect
from analysis.catalog import TABLE_FUNCTIONS
from analysis.tables import RESULTS


def filled(cells: pd.DataFrame) -> set[tuple]:
    """The (row, column) keys of the cells that hold a number of ours."""
    if cells.empty:
        return set()
    if "n_seeds" in cells:
        mask = pd.to_numeric(cells["n_seeds"], errors="coerce").fillna(0) > 0
    elif "ours" in cells:
        mask = ~cells["ours"].astype(str).isin(["missing", "nan", "", "None"])
    else:
        mask = pd.Series(True, index=cells.index)
    keys = [c for c in ("row", "column") if c in cells] or list(cells.columns[:2])
    return {tuple(str(v) for v in r) for r in cells.loc[mask, keys].itertuples(index=False)}


def replace_table(name: str, built: Path, target: Path, force: bool) -> str:
    """Move the freshly built <name>.{md,csv} over the committed ones unless that would empty cells."""
    old_csv, new_csv = target / f"{name}.csv", built / f"{name}.csv"
    if old_csv.exists() and not force:
        try:
            old = filled(pd.read_csv(old_csv))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            old = set()
        try:
            new = filled(pd.read_csv(new_csv))
        except pd.errors.EmptyDataError:  # a table none of whose runs are here (an lr search never run)
            new = set()
        dropped = old - new
        if dropped:
            shown = "; ".join(" / ".join(k) for k in sorted(dropped)[:8]) + (" ..." if len(dropped) > 8 else "")
            return (f"kept {old_csv}: the runs here would leave {len(dropped)} of its filled cells empty ({shown}); "
                    "add their runs (or --force to write the table from these runs alone)")
    target.mkdir(parents=True, exist_ok=True)
    for ext in ("md", "csv"):
        shutil.move(str(built / f"{name}.{ext}"), target / f"{name}.{ext}")
    return f"wrote {target / name}.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    p.add_argument("what", choices=["tables", "figures", "claims"])
    p.add_argument("--scale", default="local")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results folder (runs/ inside)")
    p.add_argument("--table", action="append", choices=sorted(TABLE_FUNCTIONS), help="only these tables")
    p.add_argument("--figure", action="append",
                   help="only these figures (figure3, figure4, figure8, rank_scaling_subspace, learning_curves)")
    p.add_argument("--force", action="store_true", help="replace committed tables even when cells would empty")
    args = p.parse_args(argv)

    if args.what == "claims":  # from the tables and the benchmark summary, not the runs
        from analysis.claims import write as write_claims
        from analysis.tables import REPO

        readme = REPO / "README.md" if args.results.resolve() == RESULTS.resolve() else None
        page, evaluated = write_claims(args.results, args.scale, readme)
        for claim, _, verdict in evaluated:
            print(f"{verdict:12s} {claim.key}")
        print(f"wrote {page}")
        return 0
    runs_root = args.results / "runs"
    if not (runs_root / args.scale).is_dir() or not any((runs_root / args.scale).iterdir()):
        found = sorted(d.name for d in runs_root.iterdir() if d.is_dir()) if runs_root.is_dir() else []
        p.error(f"no runs under {runs_root / args.scale}; scales with runs there: {', '.join(found) or 'none'} "
                f"(--scale, --results)")
    frame = collect(args.results, args.scale)
    print(f"{len(frame)} runs under {runs_root / args.scale}"
          + (": " + ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items()) if len(frame) else ""))
    kept = 0
    if args.what == "tables":
        target = args.results / "tables" / args.scale
        for name in args.table or list(TABLE_FUNCTIONS):
            with tempfile.TemporaryDirectory() as tmp:
                result = TABLE_FUNCTIONS[name](frame, args.scale, out_dir=Path(tmp), results=args.results)
                message = replace_table(name, Path(tmp), target, args.force)
            kept += message.startswith("kept")
            status = result.cells["status"].value_counts() if "status" in result.cells else {}
            print(f"{name}: {message}  (" + ", ".join(f"{k} {v}" for k, v in status.items()) + ")")
    else:
        from analysis.figures import FIGURE_FUNCTIONS

        for name in args.figure or list(FIGURE_FUNCTIONS):
            if name not in FIGURE_FUNCTIONS:
                p.error(f"unknown figure {name}; known: {', '.join(FIGURE_FUNCTIONS)}")
            result = FIGURE_FUNCTIONS[name](frame, args.scale, out_dir=args.results / "figures" / args.scale)
            print(result.message + (f" -> {', '.join(map(str, result.paths))}" if result.paths else ""))
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())
