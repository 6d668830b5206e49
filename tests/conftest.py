"""Shared fixtures: composing configs in-process, a data folder, smoke-run overrides."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# the real benchmark data: $LORA_DATA_DIR (the Makefile sets it), else ./data (`make data`)
REAL_DATA = Path(os.environ.get("LORA_DATA_DIR") or REPO / "data")
PY = REPO / ".venv" / "bin" / "python"


def compose(overrides: list[str], return_hydra_config: bool = False):
    """conf/config.yaml composed with `overrides`, as `python -m experiments.train` would (schemas registered)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from experiments import schemas, train  # noqa: F401 - train defines the run_name resolver of hydra's dirs

    schemas.register()

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def _write_synthetic_mnli(root: Path, n_train: int = 1100, n_dev: int = 64) -> None:
    """The mnli/ layout with made-up pairs (enough for the default task.n=1000), for machines without the real data."""
    (root / "SYNTHETIC.txt").write_text("made-up pairs for tests (tests/conftest.py); not real data\n")
    rng = random.Random(0)
    labels = ["entailment", "neutral", "contradiction"]
    words = "the a cat dog man woman runs sleeps eats is not very big small red blue house park".split()
    sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))  # noqa: E731
    sub = root / "mnli" / "train_subsets" / "ppft_glue_pretrain"
    sub.mkdir(parents=True)
    for name, n in (("train.json", n_train), ("dev.json", 8)):
        rows = {str(i): {"text_a": sent(), "text_b": sent(), "label": rng.choice(labels)} for i in range(n)}
        (sub / name).write_text(json.dumps(rows))
    for split in ("dev_matched", "dev_mismatched"):
        with open(root / "mnli" / f"{split}.jsonl", "w") as f:
            for i in range(n_dev):
                label = rng.randrange(3)
                f.write(json.dumps({"idx": i, "premise": sent(), "hypothesis": sent(), "label": label,
                                    "label_text": labels[label]}) + "\n")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """$LORA_DATA_DIR, else ./data, else a synthetic mnli/ folder."""
    if os.environ.get("LORA_DATA_DIR"):
        return Path(os.environ["LORA_DATA_DIR"])
    if (REAL_DATA / "mnli").is_dir():
        return REAL_DATA
    root = tmp_path_factory.mktemp("data")
    _write_synthetic_mnli(root)
    return root


@pytest.fixture
def env(data_dir, monkeypatch) -> dict:
    """Environment of a subprocess run (and of in-process ones, via monkeypatch): data folder, no wandb."""
    monkeypatch.setenv("LORA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return dict(os.environ)


# a smoke run small enough for a test: tiny BERT, 64 examples, 8 steps, checkpoints every 2 steps, one thread
SMOKE = ["scale=smoke", "logger=none", "train.threads=1", "train.checkpoint_every=2", "train.log_every=1",
         "train.lr=1e-3"]


@pytest.fixture
def smoke(tmp_path) -> list[str]:
    return SMOKE + [f"results_dir={tmp_path / 'results'}"]
