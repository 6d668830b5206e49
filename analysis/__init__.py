"""Analysis: rebuilds the paper's tables and figures from run directories (files) only.

    python -m analysis tables --scale local [--table table15]
    python -m analysis figures --scale local

collect.py reads every run of a scale into one DataFrame; paper.py holds the published numbers; tables.py puts
them side by side (results/tables/<scale>/); subspace.py is Section G/H's linear algebra; figures.py draws
Figures 3/4/6/7/8 (results/figures/<scale>/). Nothing here imports the training code (experiments/, lora/).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file so that a reader sees the old file or the new one, never half of one (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide tables from the others on a shared machine
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
