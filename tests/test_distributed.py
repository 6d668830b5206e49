"""Data-parallel training under torchrun (experiments/distributed.py): 2 processes on CPU (gloo) match 1 process,
rank 0 alone writes the run directory, and a killed 2-process run resumes exactly."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PY, REPO, compose

pytestmark = pytest.mark.integration  # whole processes (CLI, kills, launchers): not in the unit tier

# No dropout, so 1 and 2 processes compute the same thing up to float reduction order. batch_size 21 of 64 examples:
# slices of 10 and 11 rows (the loss weighting matters) and a 1-row batch per epoch (rank 1 gets no rows);
# grad_accum 2: DDP's no_sync on the first micro-batch of a step.
SAME = ["scale=smoke", "logger=none", "train.threads=1", "train.log_every=1", "train.lr=1e-3", "train.batch_size=21",
        "train.grad_accum=2", "+model.arch.hidden_dropout_prob=0.0", "+model.arch.attention_probs_dropout_prob=0.0"]
TOL = 1e-4  # relative, on losses and metrics; measured differences are about 1e-7

# ranks > 0 get an audit hook (sitecustomize) that refuses, and reports, every write under $NO_WRITES_UNDER made
# through Python (torch.save or safetensors to a path write from C++/Rust, but the run directory's files all go
# through mkstemp + os.replace, which it sees). Folders are let be: Hydra makes the run's folder on every rank (the
# one rank 0 makes); the listing of the run directory catches any other.
GUARD = '''
import os, sys
root = os.environ.get("NO_WRITES_UNDER")
if root and os.environ.get("RANK", "0") != "0":
    root = os.path.realpath(root)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.truncate", "os.link", "os.symlink", "os.chmod", "os.utime"}

    def guard(event, args):
        if event == "open":
            paths = [args[0]] if args[2] & WRITE else []
        elif event in EVENTS:
            paths = args[:2] if event in ("os.rename", "os.link", "os.symlink") else args[:1]
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(p)).startswith(root):
                sys.stderr.write(f"RANK {os.environ['RANK']} WROTE {event} {p}\\n")
                raise PermissionError(f"rank {os.environ['RANK']} must not write {p}")

    sys.addaudithook(guard)
'''


def guarded(env: dict, results: Path, tmp_path: Path) -> dict:
    hook = tmp_path / "guard"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(GUARD)
    return env | {"NO_WRITES_UNDER": str(results), "OMP_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))}


def torchrun(args: list[str], env: dict, results: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = guarded(env, results, tmp_path)
    return subprocess.run([str(PY), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "experiments.train", *args, f"results_dir={results}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def the_run(results: Path) -> Path:
    (run,) = [p.parent for p in results.glob("runs/*/*/*/final.json")]
    return run


def assert_only_rank0_files(run: Path) -> None:
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == [
        ".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "adapter.safetensors",
        "base_weights.safetensors", "config_hash", "final.json", "metrics.jsonl", "train.log"]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(env, tmp_path):
    probe = subprocess.run([str(PY), "-c", f"open({str(tmp_path / 'ddp' / 'x')!r}, 'w')"], capture_output=True,
                           text=True, env=guarded(env, tmp_path / "ddp", tmp_path) | {"RANK": "1"})
    assert "WROTE" in probe.stderr  # the guard is live: "WROTE" below would show a write by rank 1
    ddp = torchrun(SAME, env, tmp_path / "ddp", tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    assert "WROTE" not in ddp.stderr
    run = the_run(tmp_path / "ddp")
    assert_only_rank0_files(run)

    from experiments.train import run as run_one

    one = run_one(compose(SAME + [f"results_dir={tmp_path / 'one'}"]), run_dir=tmp_path / "one")
    two = json.loads((run / "final.json").read_text())
    assert two["status"] == one["status"] == "success" and two["steps"] == one["steps"] == 6
    assert two["metrics"].keys() == one["metrics"].keys()
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=TOL), key
    a, b = rows(run), rows(tmp_path / "one")
    assert [r["step"] for r in a] == [r["step"] for r in b]  # every row once: rank 1 logged nothing
    for x, y in zip(a, b):
        assert x.get("loss", x.get("eval_loss")) == pytest.approx(y.get("loss", y.get("eval_loss")), rel=TOL)
    p, q = load_file(str(run / "adapter.safetensors")), load_file(str(tmp_path / "one" / "adapter.safetensors"))
    assert p.keys() == q.keys() and all(torch.allclose(p[k], q[k], rtol=TOL, atol=1e-6) for k in p)


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly(env, tmp_path):
    """Dropout on (one stream per rank, each restored from the checkpoint): SIGKILL after step 5 (checkpoint at 4),
    the same command resumes, and the run ends bit-identical to an uninterrupted 2-process run."""
    args = ["scale=smoke", "logger=none", "train.threads=1", "train.log_every=1", "train.checkpoint_every=2"]
    killed = torchrun(args + ["train.kill_after_steps=5"], env, tmp_path / "a", tmp_path)
    assert killed.returncode != 0 and "WROTE" not in killed.stderr
    (ckpt,) = (tmp_path / "a").glob("runs/*/*/*/checkpoint/latest.json")
    assert json.loads(ckpt.read_text())["step"] == 4
    resumed = torchrun(args, env, tmp_path / "a", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stdout.count("resuming") == 1 and "WROTE" not in resumed.stderr
    whole = torchrun(args, env, tmp_path / "b", tmp_path)
    assert whole.returncode == 0, whole.stderr[-4000:]

    a, b = the_run(tmp_path / "a"), the_run(tmp_path / "b")
    assert_only_rank0_files(a)
    final_a, final_b = (json.loads((r / "final.json").read_text()) for r in (a, b))
    assert final_a["resumed_from_step"] == 4 and final_a["metrics"] == final_b["metrics"]
    assert rows(a) == rows(b)
    p, q = load_file(str(a / "adapter.safetensors")), load_file(str(b / "adapter.safetensors"))
    assert p.keys() == q.keys() and all((p[k] == q[k]).all() for k in p)
