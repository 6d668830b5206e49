"""Mixed precision and gradient checkpointing (experiments/precision.py) on the smoke scale's tiny BERT, on CPU."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import PY, REPO, SMOKE, compose

STEPS = SMOKE + ["scale.max_steps=null", "train.max_steps=12", "train.lr=1e-3"]


def run(overrides: list[str], run_dir: Path) -> tuple[dict, list[float]]:
    from experiments.train import run as train_run

    final = train_run(compose(overrides + [f"results_dir={run_dir.parent}"]), run_dir=run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return final, [r["loss"] for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_DATA_DIR", str(data_dir))
        mp.setenv("WANDB_MODE", "disabled")
        return run(STEPS + ["train.precision=fp32"], tmp_path_factory.mktemp("fp32") / "run")


def test_bf16_autocast_follows_the_fp32_loss_curve(fp32, env, tmp_path):
    final, curve = run(STEPS + ["train.precision=bf16"], tmp_path / "run")
    ref_final, ref = fp32
    assert final["status"] == "success" and len(curve) == len(ref) == 12
    rel = max(abs(a - b) / abs(b) for a, b in zip(curve, ref))
    assert 0 < rel < 2e-2, rel  # bf16 keeps 8 mantissa bits: ~0.4% per op, not bit-equal, never far
    assert abs(final["metrics"]["eval_loss"] - ref_final["metrics"]["eval_loss"]) < 2e-2


def test_gradient_checkpointing_gives_the_same_curve(fp32, env, tmp_path):
    final, curve = run(STEPS + ["train.precision=fp32", "train.gradient_checkpointing=true"], tmp_path / "run")
    assert max(abs(a - b) for a, b in zip(curve, fp32[1])) < 1e-5
    assert final["metrics"]["eval_accuracy"] == fp32[0]["metrics"]["eval_accuracy"]


def test_fp16_runs_with_a_gradient_scaler(env, tmp_path):
    from experiments.precision import Precision, setup
    from omegaconf import OmegaConf

    prec = setup(OmegaConf.create({"precision": "fp16", "tf32": True}), torch.device("cpu"), "smoke")
    assert isinstance(prec, Precision) and prec.scaler is not None
    final, curve = run(STEPS + ["train.precision=fp16"], tmp_path / "run")
    assert final["status"] == "success" and all(c == c for c in curve)  # no NaN: overflowing steps are skipped


def test_a_killed_bf16_run_resumes_to_the_uninterrupted_result(env, tmp_path):
    base = STEPS + ["train.precision=bf16", f"results_dir={tmp_path}"]
    killed = subprocess.run([str(PY), "-m", "experiments.train", *base, "train.kill_after_steps=6"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.glob("runs/*/*/*") if p.is_dir()]
    from experiments.train import run as train_run

    resumed = train_run(compose(base), run_dir=run_dir)
    whole, _ = run(STEPS + ["train.precision=bf16"], tmp_path / "whole" / "run")
    assert resumed["resumed_from_step"] == 6
    assert resumed["metrics"] == pytest.approx(whole["metrics"], rel=1e-6)


def test_unknown_precision_is_refused(env):
    from experiments.train import check

    with pytest.raises(ValueError, match="train.precision='fp8'; known: auto, fp32, bf16, fp16"):
        check(compose(SMOKE + ["train.precision=fp8"]))
