"""The scorers' file formats, and the check that hypotheses and references line up."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def read_refs(path: str | Path) -> list[list[str]]:
    """e2e-metrics' multi-reference format: the references of one input on consecutive lines, inputs separated by an
    empty line. Lines are stripped; a run of empty lines counts as one separator."""
    blocks: list[list[str]] = [[]]
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    if not blocks[-1]:
        blocks.pop()
    return blocks


def read_hyps(path: str | Path) -> list[str]:
    """One hypothesis per line (stripped; an empty line is an empty hypothesis); a final newline adds no line."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _one_line(text: str) -> str:
    """What a line of the scorers' files can hold: no line breaks, no surrounding whitespace."""
    return " ".join(text.splitlines()).strip()


def clean(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """Strip every text, drop empty references (the file format cannot hold them) and check that the counts agree:
    one hypothesis and at least one reference per input."""
    if isinstance(hyps, str) or any(isinstance(rs, str) for rs in refs):
        raise TypeError("refs must be a list of reference lists (one list per input) and hyps a list of strings")
    refs = [[_one_line(r) for r in rs if r.strip()] for rs in refs]
    hyps = [_one_line(h) for h in hyps]
    if not hyps and not refs:
        raise ValueError("nothing to score: no hypotheses and no references")
    if len(refs) != len(hyps):
        raise ValueError(f"number of hypotheses ({len(hyps)}) differs from number of reference blocks ({len(refs)})")
    empty = [i for i, rs in enumerate(refs) if not rs]
    if empty:
        raise ValueError(f"inputs without any reference: {empty[:10]}")
    return refs, hyps
