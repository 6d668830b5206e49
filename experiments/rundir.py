"""The run directory (DESIGN.md, "the run directory"): atomic files, resumable checkpoints, final.json.

    <run>/.hydra/config.yaml   the composed config (Hydra writes it)
    <run>/metrics.jsonl        one JSON object per logged step / evaluation, appended and flushed
    <run>/checkpoint/          while training: step_<N>.safetensors (trainable params) + step_<N>.pt (optimizer,
                               scheduler, RNG states, loop counters) + latest.json naming N, written last
    <run>/adapter.safetensors  trainable parameters of the finished run (lora.io.save_adapter)
    <run>/final.json           written last, atomically: status, metrics, params, wall time, memory, versions, git
"""
from __future__ import annotations

import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "safetensors", "hydra-core", "omegaconf", "numpy",
            "wandb")


# --------------------------------------------------------------------------------------------- atomic files
def atomic_write_text(path: Path, text: str) -> None:
    from lora.io import temp_beside

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def clean_json(value: Any) -> Any:
    """NaN/inf -> None (strict JSON; a diverged run's loss is null, not NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(clean_json(obj), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------------------------- the run folder
def make_dir(path: str | os.PathLike, what: str = "run directory") -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only folder, a file in the way, disk full: name it and the way out
        raise type(e)(f"cannot create the {what} {path} ({e.strerror}: {e.filename}); point results_dir at a "
                      "writable folder (results_dir=/some/writable/dir) or fix the permissions of the folder above "
                      "it") from e
    return path


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = make_dir(path)
        self.final = self.path / "final.json"
        self.metrics = self.path / "metrics.jsonl"
        self.adapter = self.path / "adapter.safetensors"
        self.ckpt = self.path / "checkpoint"

    def read_final(self) -> Optional[dict]:
        """final.json as a dict, or None when there is none (never ran, running, or killed). A damaged one (not JSON,
        not an object, no status) is named in a warning and counts as none: the run is redone or resumed."""
        try:
            text = self.final.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            return self._damaged(f"unreadable ({type(e).__name__})")
        try:
            final = json.loads(text)
        except ValueError:
            return self._damaged("not JSON")
        if not isinstance(final, dict) or not isinstance(final.get("status"), str):
            return self._damaged(f"a JSON {type(final).__name__} without a status, not a run record")
        return final

    def _damaged(self, why: str) -> None:
        print(f"warning: {self.final} is damaged ({why}); treating {self.path} as unfinished", file=sys.stderr,
              flush=True)
        return None

    def status(self) -> Optional[str]:
        """final.json's status, or None when there is none or it is damaged."""
        final = self.read_final()
        return None if final is None else final["status"]

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean_json(row), allow_nan=False) + "\n")
            f.flush()

    def truncate_metrics(self, last_step: int, final_step: bool = False) -> None:
        """Drop rows logged after `last_step` (a killed run logged past its last checkpoint; they are redone), and at
        the run's final step its evaluation row too (it is logged after the last checkpoint)."""
        if not self.metrics.exists():
            return
        keep = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                redone = final_step and row.get("step") == last_step and row.get("split") != "train"
                if row.get("step", 0) <= last_step and not redone:
                    keep.append(line)
            except ValueError:  # a line cut by the kill
                continue
        atomic_write_text(self.metrics, "".join(k + "\n" for k in keep))

    def reset(self) -> None:
        """Start from scratch: no metrics, no stale final.json (a failed run being re-run)."""
        for p in (self.final, self.metrics, self.adapter):
            if p.exists():
                p.unlink()

    # ----------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, trainable: dict[str, torch.Tensor], state: dict) -> None:
        """Write step_<N>.{safetensors,pt}, then latest.json (atomic) naming N, then remove older steps.

        A kill at any moment leaves latest.json pointing at complete files. `state` must hold only what
        torch.load(weights_only=True) reads back: tensors, numbers, strings, lists, tuples, dicts.
        """
        from lora.io import atomic_save_safetensors, temp_beside

        self.ckpt.mkdir(exist_ok=True)
        atomic_save_safetensors(trainable, self.ckpt / f"step_{step:07d}.safetensors")
        fd, tmp = temp_beside(self.ckpt / "state")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.ckpt / f"step_{step:07d}.pt")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        atomic_write_json(self.ckpt / "latest.json", {"step": step, "config_hash": state.get("config_hash")})
        for old in self.ckpt.glob("step_*"):
            if not old.name.startswith(f"step_{step:07d}."):
                old.unlink(missing_ok=True)

    def load_checkpoint(self) -> Optional[tuple[int, dict[str, torch.Tensor], dict]]:
        """(step, trainable tensors, state) of the latest complete checkpoint, or None.

        An unreadable checkpoint (a file truncated or damaged after it was written, latest.json garbage) is not
        fatal: it is named in a warning, dropped with the metrics logged after it, and the run starts from scratch.
        """
        latest = self.ckpt / "latest.json"
        if not latest.exists():
            return None
        from lora.io import read_safetensors

        bad = latest
        try:
            step = json.loads(latest.read_text())["step"]
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError(f"step {step!r} is not a step number")
            for bad in (self.ckpt / f"step_{step:07d}.safetensors", self.ckpt / f"step_{step:07d}.pt"):
                if not bad.is_file():
                    raise FileNotFoundError(f"latest.json names step {step}, but its file is missing")
            bad = self.ckpt / f"step_{step:07d}.safetensors"
            tensors = read_safetensors(bad)
            bad = self.ckpt / f"step_{step:07d}.pt"
            state = torch.load(bad, weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"holds a {type(state).__name__}, not a state dict")
        except Exception as e:  # noqa: BLE001 - any way a file can be damaged; the run is redone, never lost
            why = str(e).split("\n")[0][:200]
            print(f"warning: checkpoint file {bad} is unreadable ({type(e).__name__}: {why}); dropping "
                  f"{self.ckpt} and starting this run from scratch", file=sys.stderr, flush=True)
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank reads; rank 0 alone writes
                self.drop_checkpoint()
                self.metrics.unlink(missing_ok=True)  # its rows belong to the dropped progress
            return None
        return step, tensors, state

    # ----------------------------------------------------------------------------------------- ownership
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def lock(self) -> Optional[str]:
        """Take the run for this process: None when taken, else the live owner ("host:pid[:slurm job]") that holds
        it. A lock whose process is gone (killed) is taken over; one from another host is trusted (its pid cannot be
        checked) unless it names this SLURM job: a job killed and requeued onto another node takes its run back."""
        job = os.environ.get("SLURM_JOB_ID", "")
        me = f"{socket.gethostname()}:{os.getpid()}" + (f":{job}" if job else "")
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self.lock_path.read_text().strip() if self.lock_path.exists() else ""
                host, _, rest = owner.partition(":")
                pid, _, owner_job = rest.partition(":")
                if owner == me:
                    return None
                same_host_dead = host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))
                if same_host_dead or (job and owner_job == job):
                    self.lock_path.unlink(missing_ok=True)  # left by a killed process
                    continue
                return owner or "unknown (a process that is starting)"
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.clean_stale_tmp()  # ours now: temp files in it are a killed owner's leftovers
            return None
        return None

    def unlock(self) -> None:
        self.lock_path.unlink(missing_ok=True)

    def checkpoint_hash(self) -> Optional[str]:
        """The config hash the latest checkpoint was written under (None: none, or one written before it was kept)."""
        try:
            return json.loads((self.ckpt / "latest.json").read_text()).get("config_hash")
        except (OSError, ValueError, AttributeError):
            return None

    def drop_checkpoint(self) -> None:
        """latest.json goes first: a kill halfway never leaves it naming deleted files."""
        if self.ckpt.exists():
            (self.ckpt / "latest.json").unlink(missing_ok=True)
            for p in self.ckpt.iterdir():
                p.unlink(missing_ok=True)
            self.ckpt.rmdir()

    def clean_stale_tmp(self) -> None:
        """Remove temp files of atomic writes a killed process never finished (only the lock holder may)."""
        for d in (self.path, self.ckpt):
            if d.is_dir():
                for p in d.glob(".*.tmp"):
                    p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Every RNG a training step may draw from, in types torch.load(weights_only=True) accepts."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss)]}


def set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))


# --------------------------------------------------------------------------------------------- provenance
def package_versions() -> dict[str, Optional[str]]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_dirty() -> Optional[bool]:
    """Whether tracked files differ from HEAD (a result from uncommitted code), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def git_commit() -> Optional[str]:
    """HEAD of the repository (read-only), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def peak_memory_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
