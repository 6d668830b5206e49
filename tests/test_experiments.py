"""Table sweeps (conf/tables/): every swept run composes at every scale; a smoke sweep builds its table."""
from __future__ import annotations

import json
import subprocess

import pytest
from omegaconf import OmegaConf

from experiments import schemas
from tests.conftest import CONF, PY, REPO, compose

from experiments import studies, sweep_points

SCALES = sweep_points.SCALES
EXPERIMENTS = studies.names()


def swept_runs(experiment: str, scale: str) -> list[list[str]]:
    """The override lists of every run of the experiment's sweep (the Cartesian product of its params)."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return [[f"{k}={v}" for k, v in p.items()] for p in sweep_points.points(experiment, scale)]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_swept_run_composes(experiment, scale):
    at = compose([f"experiment={experiment}", f"scale={scale}"]).table_scales
    if at and scale not in at:  # a paper-only table (table2_large, table2_xxl) makes no runs here
        assert not swept_runs(experiment, scale)
        return
    runs = swept_runs(experiment, scale)
    assert runs, f"{experiment} declares no sweep (hydra.sweeper.params)"
    for overrides in runs:
        cfg = compose([f"experiment={experiment}", f"scale={scale}", *overrides])
        obj = OmegaConf.to_object(cfg)  # resolves every interpolation (train.lr from lr_by_method) and checks types
        assert isinstance(obj, schemas.Config) and obj.experiment != "adhoc"  # a sweep names its results folder
        assert isinstance(obj.train.lr, float) and obj.train.lr > 0
        obj.method.validate()


def test_table15_rows_are_the_papers():
    """One swept row per row of the paper's Table 15, each with the paper's method and hyperparameters."""
    from paper.published import TABLE15

    runs = swept_runs("table15", "local")
    assert len(runs) == len(TABLE15.rows)
    for row, overrides in zip(TABLE15.rows, sorted(runs, key=lambda o: [r.key for r in TABLE15.rows].index(
            dict(x.split("=") for x in o)["row"]))):
        assert f"row={row.key}" in overrides  # the published row names the config row its runs are
        method = OmegaConf.to_object(compose(["experiment=table15", *overrides])).method
        assert method.name == row.method, (row.label, overrides)
        for key, value in row.hparams.items():
            got = getattr(method, key)
            assert (sorted(got) == sorted(value)) if key == "targets" else got == value, (row.label, key)


def test_learning_rates_come_from_the_budget():
    cfg = compose(["experiment=table15", "row=full"])
    assert cfg.train.lr == cfg.lr_by_method["full"]
    assert compose(["experiment=table15", "row=lora_qv_r8"]).train.lr == cfg.lr_by_method["lora"]
    assert compose(["experiment=table15", "row=full", "train.lr=3e-5"]).train.lr == 3e-5  # the command line wins
    lr_search = compose(["experiment=table15_lr", "row=full"])
    assert lr_search.task.val_examples > 0 and lr_search.task.n == cfg.task.n  # tuned on train, same budget


def test_smoke_sweep_builds_its_table(env, tmp_path):
    """Two rows of the Table 15 sweep at smoke scale through Hydra multirun, then the table: those rows have numbers,
    the others say missing; a second sweep skips both runs."""
    results = tmp_path / "results"
    sweep = [str(PY), "-m", "experiments.train", "--multirun", "experiment=table15", "scale=smoke", "logger=none",
             f"results_dir={results}", "train.threads=1", "row=full,lora_qv_r8"]  # the command line replaces the file's axis
    proc = subprocess.run(sweep, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in (results / "runs" / "smoke" / "table15").iterdir() if p.is_dir())
    assert runs == ["row=full,seed=0", "row=lora_qv_r8,seed=0"]
    assert all(json.loads((results / "runs/smoke/table15" / r / "final.json").read_text())["status"] == "success"
               for r in runs)
    again = subprocess.run(sweep, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipping") == 2

    table = subprocess.run([str(PY), "-m", "analysis", "tables", "--scale", "smoke", "--results", str(results),
                            "--table", "table15"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    md = (results / "tables" / "smoke" / "table15.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "(n=1)" in lines["Fine-Tune"] and "(n=1)" in lines["LoRA r_q=r_v=8"]
    assert "missing" in lines["LoRA r_q=r_v=4"]
