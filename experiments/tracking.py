"""Run tracking: files first (metrics.jsonl), wandb as an optional mirror.

logger.name=none never imports wandb. logger.name=wandb runs it in logger.mode (offline by default: it writes
<run>/wandb/, `wandb sync` uploads later). A wandb failure is a warning, never a failed run: the files are the
record. No key or token is ever written: wandb reads its own credentials from its own config.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional

from experiments.rundir import RunDir

LOGGERS = ("wandb", "none")


class Tracker:
    def __init__(self, run: RunDir, logger_cfg, *, name: str, group: str, tags: list[str],
                 config: Optional[dict] = None, resume: bool = False):
        if logger_cfg.name not in LOGGERS:
            raise ValueError(f"logger.name must be one of {LOGGERS}, got {logger_cfg.name!r} (logger=none for files only)")
        self.run = run
        self.wandb = None
        if logger_cfg.name == "wandb":
            self.wandb = _start_wandb(run, logger_cfg, name=name, group=group, tags=tags, config=config,
                                      resume=resume)

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl (flushed), then mirror it."""
        self.run.append_metrics(row)
        if self.wandb is not None:
            try:
                self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(row.get("step", 0)))
            except Exception as e:  # noqa: BLE001 - the mirror must not kill the run
                warnings.warn(f"wandb.log failed ({e}); metrics.jsonl still has every row")

    def finish(self, final: dict[str, Any]) -> None:
        if self.wandb is None:
            return
        try:
            for key, value in (final.get("metrics") or {}).items():
                self.wandb.summary[key] = value
            self.wandb.summary["status"] = final.get("status")
            self.wandb.finish(exit_code=0 if final.get("status") == "success" else 1)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"wandb.finish failed ({e})")
        self.wandb = None


def _start_wandb(run: RunDir, logger_cfg, *, name, group, tags, config, resume):
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project=logger_cfg.project, name=name, group=group, tags=tags, config=config,
                          dir=str(run.path), mode=logger_cfg.mode, id=_wandb_id(run), resume="allow" if resume else None,
                          reinit="finish_previous")
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"wandb could not start ({type(e).__name__}: {e}); logging to files only (logger=none "
                      "silences this)")
        return None


def _wandb_id(run: RunDir) -> str:
    """A stable id per run directory, so a resumed run continues the same wandb run."""
    import hashlib

    return hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]
