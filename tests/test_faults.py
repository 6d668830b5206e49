"""Faults a long sweep meets: a SIGKILL from outside at any moment, a damaged checkpoint or adapter, secrets in the
environment. Each killed or damaged run, re-run, ends exactly where an uninterrupted one ends (CPU, same seed).

Kill moments are found by polling the run directory's files (every 5 ms), never by sleeping for a guessed time.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PY, REPO, SMOKE, compose

pytestmark = pytest.mark.integration  # whole processes (CLI, kills, launchers): not in the unit tier

# 30 steps, a checkpoint every 5, 1,000 eval examples in batches of 8: each moment below lasts long enough (0.5 to
# 2 s on 2 busy cores) for a poll to land in it.
LONG = [o for o in SMOKE if not o.startswith("train.checkpoint_every")] + [
    "scale.max_steps=null", "train.max_steps=30", "train.checkpoint_every=5", "scale.max_eval_examples=1000",
    "train.eval_batch_size=8"]
TOTAL, EVERY = 30, 5


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def run_inprocess(overrides: list[str], run_dir: Path) -> dict:
    from experiments.train import run

    return run(compose(overrides), run_dir=run_dir)


def assert_same_run(run: Path, ref: Path, ref_final: dict, final: dict) -> None:
    """Same metrics, same metrics.jsonl rows (none duplicated or missing), same adapter, nothing left over."""
    assert final["status"] == "success", final.get("error")
    assert final["metrics"] == ref_final["metrics"]
    assert rows(run) == rows(ref)
    a, b = load_file(str(run / "adapter.safetensors")), load_file(str(ref / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "final.json").read_text())["status"] == "success"
    assert not (run / "checkpoint").exists() and not (run / ".lock").exists()
    assert not [p for p in run.rglob("*.tmp")], "a temp file of an atomic write was left behind"


def _reference(tmp_path_factory, data_dir, overrides: list[str], name: str) -> tuple[Path, dict]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_DATA_DIR", str(data_dir))
        mp.setenv("WANDB_MODE", "disabled")
        run = tmp_path_factory.mktemp(name) / "run"
        return run, run_inprocess(overrides + [f"results_dir={run.parent}"], run)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory, data_dir):
    return _reference(tmp_path_factory, data_dir, LONG, "long_ref")


@pytest.fixture(scope="module")
def smoke_reference(tmp_path_factory, data_dir):
    return _reference(tmp_path_factory, data_dir, SMOKE, "smoke_ref")


# ------------------------------------------------------------------------------------------- kill from outside
def the_run(results: Path) -> Optional[Path]:
    found = [p for p in results.glob("runs/*/*/*") if p.is_dir()]
    return found[0] if found else None


def has_lock(run: Path) -> bool:
    return (run / ".lock").exists()


def has_checkpoint(run: Path) -> bool:
    return (run / "checkpoint" / "latest.json").exists()


def trained_all_steps(run: Path) -> bool:
    """The checkpoint after the last step is written: the final evaluation runs (final.json not yet written)."""
    try:
        return json.loads((run / "checkpoint" / "latest.json").read_text())["step"] == TOTAL
    except (OSError, ValueError, KeyError):
        return False


def kill_when(args: list[str], env: dict, results: Path, moment: Callable[[Path], bool], log: Path,
              timeout: float = 300) -> Path:
    """Start a CLI run, SIGKILL it as soon as `moment(run_dir)` holds, reap it (a zombie would still hold the lock);
    returns the run directory."""
    with open(log, "w") as out:
        proc = subprocess.Popen([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while True:
                run = the_run(results)
                if run is not None and moment(run):
                    proc.send_signal(signal.SIGKILL)
                    break
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (rc {proc.returncode}) before the moment came:\n"
                                f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("the moment never came")
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return run


MOMENTS = {"start-up": has_lock, "mid-training": has_checkpoint, "final-evaluation": trained_all_steps}


@pytest.mark.parametrize("moment", MOMENTS.values(), ids=MOMENTS.keys())
def test_sigkill_at_any_moment_then_rerun_matches_uninterrupted(moment, env, tmp_path, long_reference):
    results = tmp_path / "results"
    args = LONG + [f"results_dir={results}"]
    run = kill_when(args, env, results, moment, tmp_path / "killed.log")
    assert not (run / "final.json").exists(), "killed too late: the run had finished"
    latest = run / "checkpoint" / "latest.json"
    step = json.loads(latest.read_text())["step"] if latest.exists() else 0
    if moment is has_lock:
        assert step == 0
    elif moment is has_checkpoint:
        assert 0 < step < TOTAL
    else:  # checkpointed after its last step: the re-run only evaluates
        assert step == TOTAL and not (run / "adapter.safetensors").exists()

    final = run_inprocess(args, run)  # the same command, in this process (the CLI's start-up costs seconds)
    assert final["resumed_from_step"] == step
    assert_same_run(run, *long_reference, final)


@pytest.mark.parametrize("moment", ["before_final", "after_final"])
def test_sigkill_at_the_end_loses_no_training(moment, env, tmp_path, long_reference):
    """Killed after the adapter is written but before final.json (the checkpoint is still there), or after final.json
    but before the checkpoint is dropped and wandb finishes: the same command evaluates only, or skips."""
    results = tmp_path / "results"
    args = LONG + [f"results_dir={results}"]
    proc = subprocess.run([str(PY), "-m", "experiments.train", *args, f"train.kill_at={moment}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = the_run(results)
    assert json.loads((run / "checkpoint" / "latest.json").read_text())["step"] == TOTAL
    assert (run / "final.json").exists() == (moment == "after_final")
    final = run_inprocess(args, run)
    if moment == "before_final":
        assert final["resumed_from_step"] == TOTAL  # training is not redone
        assert_same_run(run, *long_reference, final)
    else:
        assert final["status"] == "success" and not (run / "checkpoint").exists()  # skipped, leftover dropped
        assert final["metrics"] == long_reference[1]["metrics"]


def test_a_failed_attempt_keeps_a_killed_runs_checkpoint(env, tmp_path, long_reference):
    """Killed at step 10, rerun with a setting that fails before training (train.device=cuda, kept out of the folder
    name), then rerun right: it resumes from step 10; the refused attempt wrote nothing."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    results = tmp_path / "results"
    args = LONG + [f"results_dir={results}"]
    killed = subprocess.run([str(PY), "-m", "experiments.train", *args, "train.kill_after_steps=10"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = the_run(results)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    refused = subprocess.run([str(PY), "-m", "experiments.train", *args, "train.device=cuda"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "no CUDA device" in refused.stderr
    assert not (run / "final.json").exists()
    assert sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "train.log") == \
        [p for p in before if p.name != "train.log"]
    final = run_inprocess(args, run)
    assert final["resumed_from_step"] == 10
    assert_same_run(run, *long_reference, final)


@pytest.mark.parametrize("record", ["[1, 2]", '"success"', "{}", '{"status": 3}', "\xff\xfe not utf-8"])
def test_a_damaged_final_json_of_any_shape_is_named_and_redone(record, env, tmp_path, smoke_reference, capsys):
    from analysis.collect import collect

    ref, ref_final = smoke_reference
    results = tmp_path / "results"
    run = results / "runs" / "smoke" / "adhoc" / "run"
    shutil.copytree(ref, run)
    (run / "final.json").write_bytes(record.encode("latin-1"))
    frame = collect(results, "smoke")  # analysis: the run is damaged, named, not a crash
    assert list(frame["status"]) == ["damaged"] and str(run) in frame["error"][0]
    final = run_inprocess(SMOKE + [f"results_dir={results}"], run)
    assert "final.json is damaged" in capsys.readouterr().err
    assert final["resumed_from_step"] == 0  # a finished run keeps no checkpoint: redone from scratch
    assert_same_run(run, ref, ref_final, final)


# ------------------------------------------------------------------------------------------- damaged checkpoints
def _truncate(path: Path, keep: Optional[int] = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


DAMAGE = {  # id -> (damage, the file the warning must name)
    "safetensors-truncated": (lambda c: _truncate(c / "step_0000004.safetensors"), "step_0000004.safetensors"),
    "pt-truncated": (lambda c: _truncate(c / "step_0000004.pt"), "step_0000004.pt"),
    "pt-empty": (lambda c: _truncate(c / "step_0000004.pt", 0), "step_0000004.pt"),
    "latest-garbage": (lambda c: (c / "latest.json").write_bytes(b"\x00{not json"), "latest.json"),
    "latest-names-missing-step": (lambda c: (c / "latest.json").write_text('{"step": 6}'), "step_0000006"),
}


@pytest.mark.parametrize("damage, named", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_checkpoint_warns_and_restarts_from_scratch(damage, named, env, tmp_path, capfd, smoke_reference):
    from experiments.rundir import RunDir

    from experiments.train import config_hash

    run = RunDir(tmp_path / "run")  # a killed run's state: checkpoint at step 4, rows logged up to step 5
    chash = config_hash(compose(SMOKE + [f"results_dir={tmp_path}"]))  # this config's: the damage is what it meets
    run.save_checkpoint(4, {"w": torch.zeros(3)}, {"config_hash": chash, "window": [0.0, 0]})
    for step in range(1, 6):
        run.append_metrics({"step": step, "split": "train", "loss": 9.0})
    damage(run.ckpt)

    final = run_inprocess(SMOKE + [f"results_dir={tmp_path}"], run.path)
    err = capfd.readouterr().err
    assert re.search(rf"warning: checkpoint file \S*{re.escape(named)}\S* is unreadable .*from scratch", err), err
    assert final["resumed_from_step"] == 0
    assert_same_run(run.path, *smoke_reference, final)


# ------------------------------------------------------------------------------------------- damaged adapter
@pytest.mark.parametrize("keep", [0, 7, 60, "half", "all-but-one"])
def test_truncated_adapter_names_the_file_and_the_way_out(keep, tmp_path):
    import lora
    from lora.io import load_adapter, save_adapter
    from tests import tiny

    torch.manual_seed(0)
    model = tiny.bert()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, alpha=8))
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, path)
    size = path.stat().st_size
    _truncate(path, {"half": size // 2, "all-but-one": size - 1}.get(keep, keep))
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable safetensors file .*truncated or "
                                         r"corrupt; .*retrain it: delete the run directory's final\.json"):
        load_adapter(model, path)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing half-loaded


# ------------------------------------------------------------------------------------------- secrets
SENTINEL = "SENTINEL7f3a9c"


def test_no_secret_from_the_environment_reaches_the_run_directory(env, tmp_path):
    """wandb (offline) and Hydra both record a lot about a run; none of it may be a token from the environment."""
    results = tmp_path / "results"
    env = env | {"WANDB_MODE": "offline", "WANDB_API_KEY": f"{SENTINEL}{'0' * 26}", "HF_TOKEN": f"hf_{SENTINEL}",
                 "HUGGING_FACE_HUB_TOKEN": f"hf_{SENTINEL}"}
    args = [o for o in SMOKE if o != "logger=none"] + ["logger=wandb", "logger.mode=offline", f"results_dir={results}"]
    proc = subprocess.run([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = the_run(results)
    assert json.loads((run / "final.json").read_text())["status"] == "success"
    files = [p for p in results.rglob("*") if p.is_file()]
    assert list(run.glob("wandb/offline-run-*/*.wandb")), "wandb did not run: the check would prove nothing"
    assert (run / ".hydra" / "config.yaml").is_file()
    leaks = [str(p.relative_to(results)) for p in files if SENTINEL.encode() in p.read_bytes()]
    assert not leaks, f"secret written into {leaks}"


# ------------------------------------------------------------------------------------------- generation (slow)
@pytest.mark.slow
def test_generation_run_killed_while_scoring_resumes_into_the_final_evaluation(env, data_dir, tmp_path):
    """E2E: the kill lands after predictions.txt, while the metrics are computed (final.json is next). The end
    checkpoint (checkpoint_at_end) lets the re-run skip training; its numbers equal an uninterrupted run's.
    About 2 min on 2 busy cores: three generation runs."""
    if not (data_dir / "e2e").is_dir():
        pytest.skip("needs the E2E data (LORA_DATA_DIR)")
    e2e = [o for o in SMOKE if not o.startswith("train.checkpoint_every")] + [
        "model=decoder_smoke", "task=e2e", "train=e2e", "train.checkpoint_every=4"]
    results = tmp_path / "results"
    args = e2e + [f"results_dir={results}"]
    run = kill_when(args, env, results, lambda r: (r / "predictions.txt").exists(), tmp_path / "killed.log")
    assert not (run / "final.json").exists(), "killed too late: the run had finished"
    assert json.loads((run / "checkpoint" / "latest.json").read_text())["step"] == 8

    final = run_inprocess(args, run)
    assert final["resumed_from_step"] == 8
    ref = tmp_path / "ref" / "run"
    ref_final = run_inprocess(e2e + [f"results_dir={ref.parent}"], ref)
    assert_same_run(run, ref, ref_final, final)
    assert (run / "predictions.txt").read_text() == (ref / "predictions.txt").read_text()


# ------------------------------------------------------------------------------------------- refused configs, output
def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_configs_that_fail_validation_write_nothing(env, tmp_path):
    results = tmp_path / "results"
    sweep = _cli(["-m", *SMOKE, f"results_dir={results}", "method.r=0,-1"], env)
    assert sweep.returncode == 0 and (sweep.stdout + sweep.stderr).count("refused") == 2, sweep.stderr[-3000:]
    single = _cli(SMOKE + [f"results_dir={results}", "method.alpha=0"], env)
    assert single.returncode != 0 and "method.alpha must be > 0" in single.stderr
    schema = _cli(SMOKE + [f"results_dir={results}", "method=method_schema"], env)
    assert schema.returncode != 0 and "type schema of the method group" in schema.stderr
    assert "known method options: adapter_d" in schema.stderr
    assert not [p for p in results.glob("runs/*/*/*") if p.is_dir()], "a refused config left a run folder"


def test_keys_a_method_does_not_read_do_not_make_another_run(env, tmp_path):
    results = tmp_path / "results"
    full = _cli(SMOKE + [f"results_dir={results}", "method=full"], env)
    assert full.returncode == 0, full.stderr[-3000:]
    again = _cli(SMOKE + [f"results_dir={results}", "method=full", "method.r=8"], env)
    assert again.returncode == 0 and "skipping" in again.stdout
    assert "method.r=8 has no effect on method=full" in again.stdout + again.stderr
    runs = [p for p in results.glob("runs/smoke/adhoc/*") if p.is_dir()]
    assert len(runs) == 2 and sum(p.is_symlink() for p in runs) == 1


def test_off_a_terminal_progress_goes_to_the_log_and_files_follow_the_umask(env, tmp_path):
    """stdout/stderr are pipes here (as under SLURM or nohup): no progress bars, a log line per step instead;
    every file of the run is readable by the group and the others under umask 022."""
    import os
    import stat

    results = tmp_path / "results"
    old = os.umask(0o022)
    try:
        proc = _cli(SMOKE + [f"results_dir={results}", "train.progress_every=2"], env)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = the_run(results)
    log = (run / "train.log").read_text()
    assert [int(m) for m in re.findall(r"step (\d+)/8, loss", log)] == [2, 4, 6, 8]
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr[-2000:]
    for path in [run / "final.json", run / "metrics.jsonl", run / "adapter.safetensors"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_shared_run_link_that_no_longer_matches_gets_its_own_run(tmp_path):
    from experiments.shared_runs import HASH_FILE, share

    scale = tmp_path / "runs" / "local"
    real = scale / "table3" / "lora"
    real.mkdir(parents=True)
    (real / HASH_FILE).write_text("aaa\n")
    (real / "final.json").write_text("{}")
    alias = scale / "table18" / "r=4"
    alias.mkdir(parents=True)
    assert share(alias, scale, "aaa") == alias and alias.is_symlink() and alias.resolve() == real.resolve()
    assert share(alias, scale, "aaa").is_symlink()  # still equal: still shared
    assert share(alias, scale, "bbb") == alias and not alias.is_symlink()  # a budget changed one of them
    assert (alias / HASH_FILE).read_text().strip() == "bbb" and (real / HASH_FILE).read_text().strip() == "aaa"


def test_a_checkpoint_of_another_config_restarts_instead_of_failing_forever(env, tmp_path):
    """Killed at step 10, then a budget change (another learning rate): the run restarts from step 0."""
    results = tmp_path / "results"
    args = LONG + [f"results_dir={results}"]
    killed = _cli(args + ["train.kill_after_steps=10"], env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = the_run(results)
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())
    assert latest["step"] == 10 and latest["config_hash"]
    (run / "checkpoint" / "latest.json").write_text(json.dumps(latest | {"config_hash": "another config"}))
    final = run_inprocess(args, run)
    assert final["status"] == "success" and final["resumed_from_step"] == 0
