"""`make data` (experiments/get_data.py) against a local git repository laid out like the authors' (no network)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from experiments.get_data import FILES, get, main
from tests.conftest import REAL_DATA, compose

pytestmark = [pytest.mark.data, pytest.mark.skipif(not (REAL_DATA / "e2e").is_dir(), reason="needs the offline data")]
OFFLINE = [f for f in FILES if (REAL_DATA / f.dest).is_file()]  # DART train/test are not in the offline copy


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def authors_repo(tmp_path) -> Path:
    repo = tmp_path / "LoRA"
    for f in OFFLINE:
        path = repo / "examples" / "NLG" / "data" / f.src
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_DATA / f.dest, path)
    (repo / "README.md").write_text("stand-in for microsoft/LoRA\n")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "data", cwd=repo)
    return repo


def test_data_command_lays_out_checked_files_and_a_run_reads_them(authors_repo, tmp_path, monkeypatch):
    dest = tmp_path / "data"
    assert main(["--source", str(authors_repo), "--dest", str(dest), "--datasets", "e2e,webnlg2017"]) == 0
    for f in OFFLINE:
        if f.dest.startswith(("e2e/", "webnlg2017/")):
            assert (dest / f.dest).read_bytes() == (REAL_DATA / f.dest).read_bytes()
    again = get(str(authors_repo), dest, ("e2e", "webnlg2017"))
    assert all("in place and correct" in line for line in again)  # idempotent: nothing cloned or written

    from experiments.train import run

    monkeypatch.setenv("LORA_DATA_DIR", str(dest))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose(["scale=smoke", "model=decoder_smoke", "model.arch.tie_word_embeddings=false", "task=e2e",
                   "train=e2e", "logger=none", "train.threads=1", "scale.max_steps=2", "train.checkpoint_every=0",
                   "scale.generation.max_inputs=2", "scale.generation.max_new_tokens=4",
                   f"results_dir={tmp_path / 'results'}"])
    final = run(cfg, run_dir=tmp_path / "results" / "run")
    assert final["status"] == "success" and final["data_source"] == "local", final.get("error")


def test_a_file_that_is_not_the_authors_is_refused_and_nothing_is_written(authors_repo, tmp_path, capsys):
    bad = authors_repo / "examples" / "NLG" / "data" / "e2e" / "valid.txt"
    bad.write_text(bad.read_text()[:-100])  # a truncated copy
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-a", "-m", "cut"],
                   cwd=authors_repo, check=True, capture_output=True)
    dest = tmp_path / "data"
    assert main(["--source", str(authors_repo), "--dest", str(dest), "--datasets", "e2e"]) == 1
    err = capsys.readouterr().err
    assert "valid.txt: sha256" in err and "is not the recorded" in err
    assert not (dest / "e2e").exists()


def test_missing_files_and_unknown_datasets_are_named(authors_repo, tmp_path, capsys):
    assert main(["--source", str(authors_repo), "--dest", str(tmp_path / "d"), "--datasets", "dart"]) == 1
    assert "dart/dart-v1.1.1-full-train.json is not in" in capsys.readouterr().err
    assert main(["--source", str(authors_repo), "--dest", str(tmp_path / "d"), "--datasets", "wikisql"]) == 1
    assert "unknown dataset(s) ['wikisql']; known: e2e, webnlg2017, dart" in capsys.readouterr().err
