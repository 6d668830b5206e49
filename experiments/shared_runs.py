"""Equal configurations are one run, whichever table's sweep asks for them first.

Two sweeps may compose the same computation under different names (Table 3's LoRA row is Table 18's r=4 row: other
experiment folder, other override names). Every run directory records the hash of what it computes in
`config_hash` (experiments.train.config_hash: the composed config minus naming, logging and thread keys). Before a
run starts, a directory that Hydra has just created and that holds nothing of a run yet becomes a relative symlink
to the scale's directory of equal hash, if there is one: the run then skips, resumes or waits on that directory's
lock like any other. Analysis lists a shared run under every experiment folder that links to it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

HASH_FILE = "config_hash"
# what a directory Hydra has just made for a run may hold before the run itself writes anything
FRESH = {".hydra", HASH_FILE}


@contextmanager
def _scale_lock(scale_root: Path) -> Iterator[None]:
    """One process at a time looks up and claims hashes in a scale's folder (parallel sweeps race otherwise)."""
    scale_root.mkdir(parents=True, exist_ok=True)
    with open(scale_root / ".shared_runs.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_fresh(run_dir: Path) -> bool:
    """Nothing of a run in it yet: only what Hydra writes before our code runs."""
    return all(p.name in FRESH or p.suffix == ".log" for p in run_dir.iterdir())


def find_equal(scale_root: Path, chash: str, other_than: Optional[Path] = None) -> Optional[Path]:
    """The real (not symlinked) run directory <scale>/<experiment>/<name> whose config_hash is `chash`."""
    for path in sorted(scale_root.glob(f"*/*/{HASH_FILE}")):
        run = path.parent
        if run.is_symlink() or (other_than is not None and run.resolve() == other_than.resolve()):
            continue
        try:
            if path.read_text().strip() == chash:
                return run
        except OSError:
            continue
    return None


def share(run_dir: str | os.PathLike, scale_root: str | os.PathLike, chash: str) -> Path:
    """The directory this run should use: `run_dir` itself (its hash recorded), or, when `run_dir` is fresh and an
    equal run exists, the same path turned into a symlink to that run's directory."""
    run_dir, scale_root = Path(run_dir), Path(scale_root)
    if run_dir.parent.parent.resolve() != scale_root.resolve():
        return run_dir  # a run outside the scale's layout (tests, an explicit run_dir)
    with _scale_lock(scale_root):
        if run_dir.is_symlink():
            try:
                linked = (run_dir / HASH_FILE).read_text().strip()
            except OSError:
                linked = None
            if linked == chash:
                return run_dir
            run_dir.unlink()  # the two configs no longer agree (a budget changed): this one gets its own run
            print(f"{run_dir}: no longer the same configuration as the run it shared; running on its own", flush=True)
        equal = find_equal(scale_root, chash, other_than=run_dir)
        if equal is None or (run_dir.exists() and not is_fresh(run_dir)):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / HASH_FILE).write_text(chash + "\n")
            return run_dir
        old_logs = [p.name for p in run_dir.glob("*.log")] if run_dir.exists() else []
        for _ in range(5):  # under torchrun another rank's Hydra may make the folder again in between
            shutil.rmtree(run_dir, ignore_errors=True)
            try:
                run_dir.symlink_to(os.path.relpath(equal, run_dir.parent), target_is_directory=True)
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"cannot replace {run_dir} by a link to {equal}: something keeps recreating it")
    _repoint_log_files(run_dir, old_logs)
    print(f"{run_dir}: the same configuration as {equal}; sharing that run directory", flush=True)
    return run_dir


def _repoint_log_files(run_dir: Path, names: list[str]) -> None:
    """Hydra's job log file was opened in the directory just replaced: append to the shared one instead."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).name in names and \
                Path(handler.baseFilename).parent == run_dir.absolute():
            handler.close()
            handler.stream = handler._open()
