"""Hydra launchers (experiments/launch.py): the thread share a job takes under each launcher, submitit_slurm's config,
and two rows of the Table 15 smoke sweep through joblib, submitit_local and submitit_slurm (SLURM played by
stand-ins for sbatch/srun/sacct/scancel that run the array's tasks on this machine)."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from omegaconf import open_dict

from experiments import launch
from tests.conftest import PY, REPO, compose

pytestmark = pytest.mark.integration  # whole processes (CLI, kills, launchers): not in the unit tier

ROWS = ["row=full,seed=0", "row=lora_qv_r8,seed=0"]
SWEEP = ["-m", "experiments.train", "--multirun", "experiment=table15", "scale=smoke", "logger=none",
         "row=full,lora_qv_r8"]


def cores() -> int:
    """The cores a job of this machine may use, as launch.job_threads counts them under joblib."""
    import joblib

    return min(launch.available_cores(), joblib.cpu_count())


def sweep(env: dict, results: Path, *launcher: str) -> tuple[list[dict], str]:
    """Run the two-row smoke sweep with `launcher` overrides; both runs must end in success in their run dirs."""
    proc = subprocess.run([str(PY), *SWEEP, f"results_dir={results}", *launcher], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    root = results / "runs" / "smoke" / "table15"
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == ROWS
    finals = [json.loads((root / row / "final.json").read_text()) for row in ROWS]
    assert [f["status"] for f in finals] == ["success", "success"], [f.get("error") for f in finals]
    return finals, proc.stdout + proc.stderr


# ---------------------------------------------------------------- job_threads, in process (no training)

@pytest.fixture
def as_job(monkeypatch):
    """as_job(overrides, mode): make this process look like a Hydra job of `overrides` on an 8-core machine."""
    import joblib
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(launch, "available_cores", lambda: 8)
    monkeypatch.setattr(joblib, "cpu_count", lambda *a, **k: 8)

    def set_job(overrides: list[str], mode: str = "MULTIRUN") -> None:
        cfg = compose(["scale=smoke", *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = mode
        HydraConfig.instance().set_config(cfg)

    yield set_job
    HydraConfig.instance().cfg = None


def test_job_threads_share_the_cores(as_job):
    assert launch.job_threads(0) == 8 and launch.job_threads(3) == 3  # outside Hydra: every core, or as asked
    as_job(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert launch.job_threads(0) == 4 and launch.job_threads(3) == 3  # train.threads > 0 wins
    as_job(["hydra/launcher=joblib"])  # the plugin's n_jobs=-1: one job per core
    assert launch.job_threads(0) == 1
    as_job(["hydra/launcher=joblib", "hydra.launcher.n_jobs=-3"])  # joblib: all cores but two -> 6 jobs
    assert launch.job_threads(0) == 1
    as_job(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"])
    assert launch.job_threads(0) == 2
    as_job(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], mode="RUN")  # a single run launches nothing
    assert launch.job_threads(0) == 8
    as_job([])  # basic launcher: one job at a time
    assert launch.job_threads(0) == 8
    as_job(["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=2"])
    assert launch.job_threads(0) == 2
    as_job(["hydra/launcher=submitit_local"])
    assert launch.job_threads(0) == 8
    as_job(["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=16"])  # never more than the affinity
    assert launch.job_threads(0) == 8


def test_submitit_slurm_composes():
    """The keys a cluster needs compose onto the plugin's schema and reach the launcher it instantiates."""
    from hydra.utils import instantiate

    keys = {"partition": "gpu", "timeout_min": 240, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64,
            "max_num_timeout": 3, "array_parallelism": 16, "account": "lab"}
    cfg = compose(["experiment=table15", "scale=paper", "hydra/launcher=submitit_slurm",
                   "hydra.launcher.setup=[module load cuda]", *(f"hydra.launcher.{k}={v}" for k, v in keys.items())],
                  return_hydra_config=True)
    assert {k: cfg.hydra.launcher[k] for k in keys} == keys
    assert cfg.hydra.launcher.submitit_folder == f"{cfg.results_dir}/runs/paper/table15/.submitit/%j"
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher" and launcher.params["partition"] == "gpu"
    assert launcher.params["setup"] == ["module load cuda"]


# ---------------------------------------------------------------- sweeps

def test_joblib_sweep_runs_in_parallel_one_share_of_the_cores_each(env, tmp_path):
    """n_jobs=2: both runs in loky worker processes at once, each with cores // 2 torch threads (1 on 2 cores)."""
    finals, log = sweep(env, tmp_path / "results", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert "Joblib.Parallel(n_jobs=2" in log
    assert [f["threads"] for f in finals] == [max(1, cores() // 2)] * 2


@pytest.mark.slow
def test_submitit_local_sweep(env, tmp_path):
    """submitit starts both jobs as subprocesses; cpus_per_task=1 caps each at one thread."""
    results = tmp_path / "results"
    finals, _ = sweep(env, results, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                      "hydra.launcher.cpus_per_task=1")
    submitit = results / "runs" / "smoke" / "table15" / ".submitit"
    assert len(list(submitit.glob("*/*_result.pkl"))) == 2  # one submitit job per run
    assert [f["threads"] for f in finals] == [1, 1]


STAND_INS = {
    # sbatch FILE: run the script's array tasks in the background, as SLURM would, and return at once
    "sbatch": r'''
        import os, re, subprocess, sys
        from pathlib import Path
        state = Path(os.environ["FAKE_SLURM_DIR"])
        text = Path(sys.argv[-1]).read_text()
        flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", text, re.M))
        job = str(1000 + len(list(state.glob("*.sh"))))
        script = state / f"{job}.sh"
        script.write_text(text)  # kept: the test reads the #SBATCH lines
        first, last = map(int, re.match(r"(\d+)-(\d+)", flags.get("array", "0-0")).groups())
        for task in range(first, last + 1):
            env = dict(os.environ, SLURM_JOB_ID=f"{job}{task}", SLURM_ARRAY_JOB_ID=job,
                       SLURM_ARRAY_TASK_ID=str(task), SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
                       SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost",
                       SLURM_CPUS_PER_TASK=flags.get("cpus-per-task", "1"))
            if "array" not in flags:
                for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
                    env.pop(key)
            rc = state / (f"{job}_{task}.rc" if "array" in flags else f"{job}.rc")
            subprocess.Popen(["bash", "-c", f"bash {script}; echo $? > {rc}"], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"Submitted batch job {job}")
    ''',
    # srun [--flag value ...] CMD: CMD bound to the task's cpus (as SLURM's task affinity does), its output to the
    # --output/--error files with %A %a %j %t filled in
    "srun": r'''
        import os, sys
        args, files = sys.argv[1:], {}
        while args and args[0].startswith("-"):
            flag = args.pop(0)
            if flag in ("--output", "--error"):
                files[flag] = args.pop(0)
        e = os.environ
        fill = lambda p: (p.replace("%A", e.get("SLURM_ARRAY_JOB_ID", ""))
                          .replace("%a", e.get("SLURM_ARRAY_TASK_ID", ""))
                          .replace("%j", e["SLURM_JOB_ID"]).replace("%t", "0"))
        cpus = sorted(os.sched_getaffinity(0))[: int(e.get("SLURM_CPUS_PER_TASK", "1"))]
        os.sched_setaffinity(0, cpus)
        for flag, fd in (("--output", 1), ("--error", 2)):
            if flag in files:
                os.dup2(os.open(fill(files[flag]), os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
        os.execvp(args[0], args)
    ''',
    # sacct -o JobID,State,NodeList --parsable2 -j ID ...: RUNNING until a task's exit code is written
    "sacct": r'''
        import os, sys
        from pathlib import Path
        state = Path(os.environ["FAKE_SLURM_DIR"])
        ids = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"]
        print("JobID|State|NodeList")
        for job in ids:
            for rc in sorted(state.glob(f"{job}_*.rc")) + sorted(state.glob(f"{job}.rc")):
                code = rc.read_text().strip()
                print(f"{rc.stem}|{'COMPLETED' if code == '0' else 'FAILED' if code else 'RUNNING'}|localhost")
    ''',
    "scancel": "",
}


@pytest.mark.slow
def test_submitit_slurm_sweep_on_stand_in_slurm(env, tmp_path):
    """submitit_slurm writes one sbatch job array for the sweep, with the keys given on the command line; its tasks
    (run here by the stand-ins) write both run directories, each task bound to its cpus_per_task core."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(f"#!{PY}\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(0o755)
    env = env | {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "FAKE_SLURM_DIR": str(state)}
    finals, _ = sweep(env, tmp_path / "results", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                      "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4")
    scripts = list(state.glob("*.sh"))
    assert len(scripts) == 1  # one array for the whole sweep
    sbatch = scripts[0].read_text()
    for line in ("--partition=debug", "--time=10", "--cpus-per-task=1", "--mem=4GB", "--array=0-1%2"):
        assert f"#SBATCH {line}\n" in sbatch, sbatch
    assert [f["threads"] for f in finals] == [1, 1]
