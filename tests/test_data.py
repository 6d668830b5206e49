"""Data loading (real offline files where present), MNLI-n sampling, validation carve-out, GLUE metrics."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from experiments import data
from experiments.tasks import glue, load_task
from tests.conftest import REAL_DATA

NO_CAP = SimpleNamespace(name="paper", max_train_examples=None, max_eval_examples=None, max_steps=None)
_has_data = (REAL_DATA / "glue").is_dir()


def real(test):
    """A test on the real data files: marked `data` (the unit tier leaves it out), skipped without them."""
    return pytest.mark.data(pytest.mark.skipif(not _has_data, reason="needs the offline GLUE copy beside the repo")(test))


def mnli(n, val=0, seed=1234):
    return SimpleNamespace(name="mnli", n=n, data_seed=seed, val_examples=val, eval_mismatched=True)


@pytest.fixture
def real_data(monkeypatch):
    monkeypatch.setenv("LORA_DATA_DIR", str(REAL_DATA))


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_against_hand_computed_values():
    assert glue.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    # tp=2 fp=1 fn=1 -> F1 = 4/6
    assert glue.f1_binary([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(2 / 3)
    # tp=2 tn=1 fp=1 fn=1: (2-1)/sqrt(3*3*2*2) = 1/6
    assert glue.matthews([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(1 / 6)
    assert glue.matthews([1, 1, 1], [1, 0, 1]) == 0.0  # one predicted class only
    assert glue.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert glue.ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert glue.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert glue.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------ real files
@real
@pytest.mark.parametrize("task,train,dev", [("cola", 8551, 1043), ("mrpc", 3668, 408), ("rte", 2490, 277),
                                            ("stsb", 5749, 1500)])
def test_glue_row_counts_match_official(real_data, task, train, dev):
    spec = glue.TASKS[task]
    assert len(glue.load_split(spec, "train.tsv", "train")) == train
    rows = glue.load_split(spec, "dev.tsv", "validation")
    assert len(rows) == dev
    assert all(isinstance(e.a, str) and e.a for e in rows)
    if spec.regression:
        assert all(0.0 <= e.label <= 5.0 for e in rows)
    else:
        assert {e.label for e in rows} == {0, 1}


@real
def test_mnli_labels_follow_glue_ids(real_data):
    dev = glue.load_split(glue.TASKS["mnli"], "dev_matched.jsonl", "validation_matched")
    assert len(dev) == 9815
    assert (dev[0].a, dev[0].label) == ("The new rights are nice enough", 1)  # neutral = 1
    counts = [sum(e.label == k for e in dev) for k in range(3)]
    assert counts == [3479, 3123, 3213]  # entailment, neutral, contradiction (mnli/SOURCE.txt)
    pool, source = glue.load_mnli_train()
    assert len(pool) == 8999 + 1000 and source == "offline subsets"
    assert {e.label for e in pool} == {0, 1, 2}


@real
def test_mnli_n_sampling(real_data):
    a = load_task(mnli(100, val=50), NO_CAP)
    b = load_task(mnli(100, val=50), NO_CAP)
    assert len(a.train) == 100 and len(a.val) == 50 and len(a.evals["eval"]) == 9815 and "eval_mm" in a.evals
    assert a.train == b.train  # the data seed, not the run seed, draws the subset
    assert a.train != load_task(mnli(100, seed=7), NO_CAP).train
    train_pairs = {(e.a, e.b) for e in a.train}
    assert not train_pairs & {(e.a, e.b) for e in a.val}  # validation is carved out of TRAIN, disjoint
    with pytest.raises(ValueError, match=r"n=10000 .* only 9999 are available"):
        load_task(mnli(10000), NO_CAP)


@real
def test_qnli_trains_from_the_hub_and_evaluates_on_the_local_dev(real_data, monkeypatch):
    """Only QNLI's dev split is offline: train comes from the hub copy (stubbed here: no network in tests)."""
    asked = []

    def hub(path, name, split):
        asked.append((path, name, split))
        return [{"question": f"q{i}", "sentence": f"s{i}", "label": i % 2} for i in range(20)]

    monkeypatch.setattr(data, "hub_split", hub)
    task = load_task(SimpleNamespace(name="qnli", n=None, data_seed=0, val_examples=4, eval_mismatched=False), NO_CAP)
    assert asked == [("nyu-mll/glue", "qnli", "train")]
    assert len(task.train) == 16 and len(task.val) == 4 and len(task.evals["eval"]) == 5463


def test_scale_caps_are_fixed_and_recorded(data_dir, monkeypatch):
    monkeypatch.setenv("LORA_DATA_DIR", str(data_dir))
    scale = SimpleNamespace(name="smoke", max_train_examples=32, max_eval_examples=16, max_steps=None)
    a, b = load_task(mnli(64), scale), load_task(mnli(64, seed=99), scale)
    assert len(a.train) == 32 and len(a.evals["eval"]) == 16
    assert a.evals["eval"] == b.evals["eval"]  # the eval sample is the same for every run
    assert any("32 of 64" in d for d in a.deviations)


def test_missing_data_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_DATA_DIR", str(tmp_path))
    import datasets
    import huggingface_hub

    # the hub fallback fails fast instead of waiting on a network (both libraries read the flag at import)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(data.DataNotFound) as err:
        glue.load_split(glue.TASKS["rte"], "dev.tsv", "validation")
    assert str(tmp_path / "glue" / "RTE" / "dev.tsv") in str(err.value) and "LORA_DATA_DIR" in str(err.value)
    monkeypatch.setenv("LORA_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(data.DataNotFound, match="not a directory"):
        data.data_root()


def test_collate_pads_to_the_longest_row():
    import torch

    enc = data.Encoded([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
                        {"input_ids": [5], "attention_mask": [1]}], torch.tensor([0, 2]))
    batch = data.collate(enc, [0, 1], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [0, 2]
