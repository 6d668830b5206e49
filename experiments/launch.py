"""How many torch threads one run may use, given the Hydra launcher that started it.

A sweep (`python -m experiments.train -m ...`) runs its jobs with the launcher `hydra/launcher=` names:

  basic           (default) one job after another in this process: each uses every core this process may use
  joblib          hydra.launcher.n_jobs jobs at once in loky worker processes on this machine (-1, the plugin's
                  default: one job per core): each gets cores // n_jobs threads, so the sweep never asks for more
                  threads than there are cores. Fewer, fatter jobs: hydra.launcher.n_jobs=2 (memory grows with
                  n_jobs: every job holds its own model)
  submitit_local  every job of the sweep at once, each a subprocess started by submitit (for trying the submitit
                  path before a cluster): hydra.launcher.cpus_per_task threads each when set, else every core
  submitit_slurm  one SLURM job per run; SLURM confines it to its cpus_per_task cores, which the process's CPU
                  affinity shows (capped by hydra.launcher.cpus_per_task when set, for clusters that do not bind)

train.threads > 0 always wins: `job_threads(cfg.train.threads)` is the number to give `loop.set_threads`.
"""
from __future__ import annotations

import os
from typing import Any, Optional

# hydra.launcher._target_ of the launchers this project knows -> their conf name (hydra/launcher=<name>)
LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": "basic",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "submitit_slurm",
}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM allocation, taskset), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _hydra_launcher() -> tuple[Optional[str], Any]:
    """(launcher name, its config node) of the Hydra multirun job this process runs; (None, {}) outside one (a
    single run, a test calling train.run directly, a notebook). Keys are read one by one: resolving the whole node
    would need the app's config (submitit_folder interpolates hydra.sweep.dir)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, {}
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or hc.get("launcher") is None:
        return None, {}
    target = str(hc.launcher.get("_target_", ""))
    return LAUNCHERS.get(target, target.rsplit(".", 1)[-1] or None), hc.launcher


def joblib_workers(n_jobs) -> int:
    """How many jobs joblib runs at once for `n_jobs` (joblib's rule: -1 all CPUs, -2 all but one, None one)."""
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        import joblib

        return max(1, joblib.cpu_count() + 1 + n_jobs)
    return max(1, n_jobs)


def job_threads(requested: int) -> int:
    """Torch threads for this run: `requested` when > 0 (train.threads set by the user), else a share of the cores
    that keeps the jobs the launcher runs at once from oversubscribing them (module docstring); outside a Hydra
    multirun, or under the basic launcher, every core this process may use (what train.threads=0 always meant)."""
    if requested > 0:
        return requested
    cores = available_cores()
    name, launcher = _hydra_launcher()
    if name == "joblib":
        try:
            import joblib

            cores = min(cores, joblib.cpu_count())  # joblib also honours a cgroup CPU quota and LOKY_MAX_CPU_COUNT
        except Exception:  # noqa: BLE001 - the affinity count stands
            pass
        return max(1, cores // joblib_workers(launcher.get("n_jobs", -1)))
    if name in ("submitit_local", "submitit_slurm") and launcher.get("cpus_per_task"):
        return max(1, min(cores, int(launcher["cpus_per_task"])))
    return cores
