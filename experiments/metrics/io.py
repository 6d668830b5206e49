"""The scorers' file formats, and the check that hypotheses and references line up."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


class UnreadableFile(ValueError):
    """A scorer's input file that is not UTF-8 text; the message names the file, where and how to fix it."""


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file as `wc -l` counts them: split on "\n" only (U+2028, NEL, form feed and the
    other characters `str.splitlines` breaks on stay inside their line), one trailing "\r" dropped per line (CRLF
    files), a final newline adds no line and a last line without one still counts."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise UnreadableFile(
            f"{path} is not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset {err.start} (line {line}, byte "
            f"{column} of that line) cannot be decoded ({err.reason}); re-encode the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > fixed.txt` when it was written as Latin-1") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_refs(path: str | Path) -> list[list[str]]:
    """e2e-metrics' multi-reference format: the references of one input on consecutive lines, inputs separated by an
    empty line. Lines (`read_lines`) are stripped; a run of empty lines counts as one separator."""
    blocks: list[list[str]] = [[]]
    for line in read_lines(path):
        line = line.strip()
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    if not blocks[-1]:
        blocks.pop()
    return blocks


def read_hyps(path: str | Path) -> list[str]:
    """One hypothesis per line (`read_lines`: as many as `wc -l` counts; stripped; an empty line is an empty
    hypothesis); a final newline adds no line."""
    return [line.strip() for line in read_lines(path)]


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
