"""Get E2E, WebNLG 2017 and DART in exactly the files the paper's authors trained on, checked, into LORA_DATA_DIR.

    make data                                   # = python -m experiments.get_data --dest $LORA_DATA_DIR (or ./data)
    python -m experiments.get_data --source /path/to/a/LoRA/clone --dest data --datasets e2e,webnlg2017

The files come from the authors' repository (microsoft/LoRA, examples/NLG/data: a sparse, shallow git clone) and
each is checked before it is laid out: against a sha256 recorded here where one is known (taken from the offline copy
these experiments were developed on, which is byte-identical), and always against the authors' git blob id. A file
that fails a check is named and nothing is written; files already in place and correct are kept
(the command is idempotent). GLUE needs no step here: without a local copy, tasks load the hub's parquet copy
(nyu-mll/glue) when they run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

AUTHORS = "https://github.com/microsoft/LoRA.git"
IN_REPO = "examples/NLG/data"


@dataclass(frozen=True)
class DataFile:
    dest: str  # path under LORA_DATA_DIR, where experiments/tasks read it
    src: str  # path under examples/NLG/data of the authors' repository
    git_blob: str  # the authors' git blob id (sha1 of "blob <size>\0" + content)
    sha256: Optional[str] = None  # where the offline copy has the file


FILES = (
    DataFile("e2e/train.txt", "e2e/train.txt", "2f92a2790c00a48574dcc89465a326f33d7e7cc6",
             "eae319082237310913d9f37f6a891d48fb3f821f29d86870d2cb4f92ddd72c5a"),
    DataFile("e2e/valid.txt", "e2e/valid.txt", "94f87112e11198710d65a1d5dc7d0b8d9155a07d",
             "ba963113c8401d3d26216c0dc0a6dae1ea6ea927de3bf830e32c41f65401c80d"),
    DataFile("e2e/test.txt", "e2e/test.txt", "084da9f4409d98058bcb020614afa83824440484",
             "81b1bcd40c4f12845ec4eb61a77bf43765d112483cd9b2f91ef10bfc1b3d8f13"),
    DataFile("webnlg2017/train.json", "webnlg_challenge_2017/train.json", "461766d1fe902bd659b821a03f49310c22403686",
             "180edb6011360608c8548d4551366a9d55f140cbf9bc9397fbf4d97f6a89c639"),
    DataFile("webnlg2017/dev.json", "webnlg_challenge_2017/dev.json", "180f096ff49a7e597dd7c507ea0c5441e839b770",
             "50f5a2c24d760bc84ba3e852707cd3b43b0cf2da035b425f87945a2440880488"),
    DataFile("webnlg2017/test.json", "webnlg_challenge_2017/test.json", "7f552799b7e3b5badf95b725c20d955e0886811e",
             "2574896b23b5959d1a0cd4bb501ffbeff1a11790a9996c4cb8efed289149ff4f"),
    DataFile("dart/dart-v1.1.1-full-train.json", "dart/dart-v1.1.1-full-train.json",
             "66d6ce4aeb5d01c318c7fc15d7747ef39ea320be"),
    DataFile("dart/dart-v1.1.1-full-dev.json", "dart/dart-v1.1.1-full-dev.json",
             "e3a7a497677e7edd9c45a3aaadb3ab8fd5493f75",
             "5038f3543b6d59b94ac4e3f69d15a0b01d8578913f862142e7c560200dd6e434"),
    DataFile("dart/dart-v1.1.1-full-test.json", "dart/dart-v1.1.1-full-test.json",
             "c3de833701dcd475ff3bf0b72cd96e13aeeb6b68"),
)
DATASETS = ("e2e", "webnlg2017", "dart")


class BadDataFile(ValueError):
    pass


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check(path: Path, f: DataFile) -> None:
    data = path.read_bytes()
    if f.sha256 is not None and hashlib.sha256(data).hexdigest() != f.sha256:
        raise BadDataFile(f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not the recorded {f.sha256} for "
                          f"{f.dest}; the source is not the authors' file (a different commit, an LFS pointer, a "
                          "truncated download): fetch it again, or point --source at microsoft/LoRA")
    if git_blob_id(data) != f.git_blob:
        raise BadDataFile(f"{path}: git blob {git_blob_id(data)} is not the authors' {f.git_blob} for {f.dest}; "
                          "fetch it again, or point --source at microsoft/LoRA")


def _git(*args: str) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()[-600:]}")


def clone(source: str, into: Path, ref: Optional[str] = None) -> Path:
    """A shallow clone of `source` with only examples/NLG/data checked out; returns that folder."""
    _git("clone", "--depth", "1", "--filter=blob:none", "--no-checkout", *(["--branch", ref] if ref else []), source, str(into))
    _git("-C", str(into), "sparse-checkout", "set", "--no-cone", IN_REPO)
    _git("-C", str(into), "checkout")
    return into / IN_REPO


def get(source: str, dest: Path, datasets: tuple[str, ...] = DATASETS, ref: Optional[str] = None) -> list[str]:
    """Lay the files of `datasets` out under `dest`; returns what it did, a line per file."""
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    wanted = [f for f in FILES if f.dest.split("/")[0] in datasets]
    todo, report = [], []
    for f in wanted:
        target = dest / f.dest
        try:
            check(target, f)
            report.append(f"{f.dest}: in place and correct")
        except (OSError, BadDataFile):
            todo.append(f)
    if not todo:
        return report
    with tempfile.TemporaryDirectory(prefix="lora-data-") as tmp:
        root = clone(source, Path(tmp) / "src", ref)
        for f in todo:  # check everything before anything is written
            path = root / f.src
            if not path.is_file():
                raise BadDataFile(f"{f.src} is not in {source} ({IN_REPO}); is it the authors' repository?")
            check(path, f)
        for f in todo:
            target = dest / f.dest
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.part")
            shutil.copyfile(root / f.src, part)
            os.replace(part, target)
            report.append(f"{f.dest}: written ({target.stat().st_size:,} bytes, checked)")
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.get_data", description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=AUTHORS, help="git URL or path of the authors' repository")
    ap.add_argument("--ref", default=None, help="branch or tag to clone (default: the default branch)")
    ap.add_argument("--dest", type=Path, default=Path(os.environ.get("LORA_DATA_DIR") or "data"),
                    help="the data folder (default $LORA_DATA_DIR, else ./data)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {','.join(DATASETS)}")
    args = ap.parse_args(argv)
    try:
        for line in get(args.source, args.dest, tuple(d for d in args.datasets.split(",") if d), args.ref):
            print(line)
    except (BadDataFile, RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"data in {args.dest.resolve()}: export LORA_DATA_DIR={args.dest.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
