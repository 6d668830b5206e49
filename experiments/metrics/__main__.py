"""python -m experiments.metrics {e2e,webnlg} --refs REFS --hyps HYPS [--metrics A,B] [--num-refs N]

REFS: the references of one input on consecutive lines, inputs separated by an empty line (e2e-metrics format; a
file without any empty line holds one reference per input, as in e2e-metrics).
HYPS: one output per line.
Both files are UTF-8. A line ends at LF only (CRLF is read as LF; U+2028, NEL and form feed do not end a line), so a
file holds the lines `wc -l` counts, plus a last line without a final newline. The LAST line printed is JSON:
  e2e:    BLEU, NIST, METEOR, ROUGE_L, CIDEr   (BLEU, METEOR, ROUGE_L x100; NIST, CIDEr as they come)
  webnlg: BLEU (x100), METEOR, TER (fractions, as the paper prints them); also for DART
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.metrics import E2E_METRICS, WEBNLG_METRICS, MissingDependency, read_hyps, read_refs, score_e2e, \
    score_webnlg
from experiments.metrics.io import UnreadableFile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.metrics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["e2e", "webnlg"], help="webnlg also serves DART")
    ap.add_argument("--refs", required=True)
    ap.add_argument("--hyps", required=True)
    ap.add_argument("--metrics", help="comma-separated subset (default: all of the task's metrics; without Java: "
                                      "BLEU,NIST for e2e, BLEU,TER for webnlg)")
    ap.add_argument("--num-refs", type=int, help="webnlg: GenerationEval's -nr, references per input after padding "
                                                 "with empty ones (default: the largest count; LoRA used 6)")
    args = ap.parse_args(argv)
    try:
        refs, hyps = read_refs(args.refs), read_hyps(args.hyps)
    except UnreadableFile as err:  # not UTF-8: the message names the file, the byte and the way out
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # missing, a folder, no permission
        print(f"error: cannot read {err.filename} ({err.strerror}); check the --refs/--hyps paths", file=sys.stderr)
        return 2
    if len(refs) == 1 and len(hyps) == len(refs[0]) > 1:  # no empty line at all: e2e-metrics' single-reference file
        refs = [[r] for r in refs[0]]
    if len(refs) != len(hyps):
        print(f"error: {len(hyps)} hypotheses in {args.hyps} but {len(refs)} reference blocks in {args.refs}",
              file=sys.stderr)
        return 2
    metrics = args.metrics.split(",") if args.metrics else (E2E_METRICS if args.task == "e2e" else WEBNLG_METRICS)
    try:
        if args.task == "e2e":
            scores = score_e2e(refs, hyps, metrics=metrics)
        else:
            scores = score_webnlg(refs, hyps, metrics=metrics, num_refs=args.num_refs)
    except (MissingDependency, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
