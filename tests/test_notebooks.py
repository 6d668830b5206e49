"""notebooks/ run end to end on a fresh smoke sweep (real run directories, not synthetic ones)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import PY, REPO

pytestmark = pytest.mark.integration  # whole processes (CLI, kills, launchers): not in the unit tier


@pytest.mark.slow
def test_figures_notebook_runs_on_smoke_results(env, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    results = tmp_path / "results"
    # r=8 and r=64 on W_q, W_v with two seeds: what Figures 3, 4 and 8 and Table 7 need
    sweep = subprocess.run([str(PY), "-m", "experiments.train", "--multirun", "experiment=table6", "scale=smoke",
                            "logger=none", "train.threads=1", f"results_dir={results}", "row=lora_qv_r8,lora_qv_r64",
                            "seed=0,1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    out = tmp_path / "figures"
    nb = nbformat.read(REPO / "notebooks" / "figures.ipynb", as_version=4)
    for key, value in {"LORA_SCALE": "smoke", "LORA_RESULTS": str(results), "LORA_FIGURES": str(out),
                       "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    for name in ("figure3", "figure4", "figure8", "table6_ranks"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "4 runs at scale 'smoke'" in text
