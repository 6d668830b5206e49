"""python -m analysis tables --scale local [--table table15] | figures --scale local [--figure figure3]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.collect import collect
from analysis.tables import RESULTS, TABLE_FUNCTIONS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    p.add_argument("what", choices=["tables", "figures"])
    p.add_argument("--scale", default="local")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results folder (runs/ inside)")
    p.add_argument("--table", action="append", choices=sorted(TABLE_FUNCTIONS), help="only these tables")
    p.add_argument("--figure", action="append", help="only these figures (figure3, figure4, figure8)")
    args = p.parse_args(argv)

    frame = collect(args.results, args.scale)
    print(f"{len(frame)} runs under {args.results / 'runs' / args.scale}"
          + (": " + ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items()) if len(frame) else ""))
    if args.what == "tables":
        for name in args.table or list(TABLE_FUNCTIONS):
            result = TABLE_FUNCTIONS[name](frame, args.scale, results=args.results)
            status = result.cells["status"].value_counts() if "status" in result.cells else {}
            print(f"{name}: {result.paths[0]}  (" + ", ".join(f"{k} {v}" for k, v in status.items()) + ")")
    else:
        from analysis.figures import FIGURE_FUNCTIONS

        for name in args.figure or list(FIGURE_FUNCTIONS):
            if name not in FIGURE_FUNCTIONS:
                p.error(f"unknown figure {name}; known: {', '.join(FIGURE_FUNCTIONS)}")
            result = FIGURE_FUNCTIONS[name](frame, args.scale, out_dir=args.results / "figures" / args.scale)
            print(result.message + (f" -> {', '.join(map(str, result.paths))}" if result.paths else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
