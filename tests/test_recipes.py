"""Paper-scale configs compose to appendix D's values (Tables 9-11), per model and task; recipe=authors to the
released scripts'; the table of their differences is the committed one; init_from loads the adapter, not the head."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO, compose

TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
TASK_OPTION = {"mnli": "mnli_n"}  # Table 2 sweeps MNLI as mnli_n (n=null at paper scale: the whole train set)

# Typed from the paper, appendix D, independently of paper/recipes.py: per task in TASKS order.
# Table 9, RoBERTa base LoRA: batch, epochs, lr; r=8, alpha=8 and length 512 for every task
ROBERTA_BASE = dict(batch_size=(16, 16, 16, 32, 32, 16, 32, 16), epochs=(30, 60, 30, 80, 25, 25, 80, 40),
                    lr=(5e-4, 5e-4, 4e-4, 4e-4, 4e-4, 5e-4, 5e-4, 4e-4), max_seq_len=(512,) * 8, alpha=(8,) * 8,
                    r=(8,) * 8, warmup_ratio=(0.06,) * 8)
# Table 9, RoBERTa large LoRA: r=8, alpha=16
ROBERTA_LARGE = dict(batch_size=(4, 4, 4, 4, 4, 4, 8, 8), epochs=(10, 10, 20, 20, 10, 20, 20, 30),
                     lr=(3e-4, 4e-4, 3e-4, 2e-4, 2e-4, 3e-4, 4e-4, 2e-4),
                     max_seq_len=(128, 128, 512, 128, 512, 512, 512, 512), alpha=(16,) * 8, r=(8,) * 8,
                     warmup_ratio=(0.06,) * 8)
# Table 10, DeBERTa XXL (r: 16, the rank of the paper's 4.7M parameters; Table 10 prints 8)
DEBERTA_XXL = dict(batch_size=(8, 8, 32, 4, 6, 8, 4, 4), epochs=(5, 16, 30, 10, 8, 11, 11, 10),
                   lr=(1e-4, 6e-5, 2e-4, 1e-4, 1e-4, 1e-4, 2e-4, 2e-4),
                   weight_decay=(0, 0.01, 0.01, 0, 0.01, 0.01, 0.01, 0.1),
                   head_dropout=(0.15, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2),
                   max_seq_len=(256, 128, 128, 64, 512, 320, 320, 128), warmup_ratio=(0.1,) * 8, r=(16,) * 8)
# Table 9, RoBERTa large Adpt^H (0.8M)†: batch 32, length 128, lr 3e-4
ADAPTER_H8 = dict(batch_size=(32,) * 8, max_seq_len=(128,) * 8, lr=(3e-4,) * 8, epochs=(10, 5, 10, 10, 5, 20, 20, 10))
# appendix D.1: MRPC, RTE and STS-B start from the MNLI LoRA checkpoint
INIT = ("", "", "mnli", "", "", "", "mnli", "mnli")

WHERE = {"batch_size": "train", "epochs": "train", "lr": "train", "weight_decay": "train", "warmup_ratio": "train",
         "max_seq_len": "task", "alpha": "method", "r": "method", "head_dropout": "model"}


def composed(table: str, task: str, row: str, *extra: str) -> dict:
    cfg = compose([f"experiment={table}", "scale=paper", f"task={TASK_OPTION.get(task, task)}", f"row={row}", *extra])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("table,row,expected", [("table2", "lora_qv_r8", ROBERTA_BASE),
                                                ("table2_large", "lora_qv_r8", ROBERTA_LARGE),
                                                ("table2_xxl", "lora_qv_r16", DEBERTA_XXL),
                                                ("table2_large", "adapter_h_r8", ADAPTER_H8)])
def test_paper_scale_glue_composes_to_appendix_d(table, row, expected):
    for i, task in enumerate(TASKS):
        cfg = composed(table, task, row)
        got = {k: cfg[WHERE[k]][k] for k in expected}
        assert got == pytest.approx({k: v[i] for k, v in expected.items()}), (table, task)
        assert cfg["train"]["eval_every_epoch"] and cfg["train"]["init_from"] == ("" if "adapter" in row else INIT[i])
        assert cfg["task"]["n"] is None
    assert composed(table, "mnli", row)["task"]["eval_mismatched"]  # matched and mismatched


def test_recipe_authors_takes_the_scripts_values():
    base = composed("table2", "mnli", "lora_qv_r8", "recipe=authors")
    assert (base["method"]["alpha"], base["train"]["batch_size"]) == (16, 128)  # alpha 16; 8 GPUs x 16
    assert composed("table2", "cola", "lora_qv_r8", "recipe=authors")["train"]["batch_size"] == 64  # 2 GPUs x 32
    assert composed("table2_large", "cola", "lora_qv_r8", "recipe=authors")["train"]["lr"] == pytest.approx(3e-4)
    xxl = composed("table2_xxl", "rte", "lora_qv_r16", "recipe=authors")
    assert xxl["train"]["lr"] == pytest.approx(2.6e-4) and xxl["train"]["warmup_steps"] == 50


def test_paper_scale_gpt2_composes_to_table_11():
    e2e = OmegaConf.to_container(compose(["experiment=table3", "scale=paper", "row=lora_qv_r4_a32"]), resolve=True)
    t, g = e2e["train"], e2e["task"]["generation"]
    assert (t["lr"], t["batch_size"], t["epochs"], t["warmup_steps"], t["weight_decay"], t["label_smoothing"]) == \
        (pytest.approx(2e-4), 8, 5, 500, pytest.approx(0.01), pytest.approx(0.1))
    assert (g["num_beams"], g["length_penalty"], g["no_repeat_ngram_size"]) == (10, pytest.approx(0.9), 4)
    assert (e2e["method"]["r"], e2e["method"]["alpha"], e2e["method"]["dropout"]) == (4, 32, pytest.approx(0.1))
    assert e2e["train"]["adam_eps"] == pytest.approx(1e-6)
    assert (e2e["task"]["separator"], e2e["task"]["target_prefix"]) == ("<|endoftext|>", " ")
    authors = compose(["experiment=table3", "scale=paper", "row=lora_qv_r4_a32", "recipe=authors"])
    assert authors.task.generation.length_penalty == pytest.approx(0.8)  # the README's b10p08
    webnlg = compose(["experiment=table14", "scale=paper", "row=lora_qv_r4_a32"])
    assert webnlg.task.generation.length_penalty == pytest.approx(0.8)


# Table 12 (GPT-3, appendix D.4): batch 128, 2 epochs, weight decay 0.1, length 768; the learning rate per method
TABLE12_LR = {"full": 5e-6, "pe_lp256_li8": 5e-4, "pl_lp8_li8": 1e-4, "adapter_h_r8": 1e-4, "lora_qv_r8": 2e-4}
# Table 17 (MNLI-100 and -1k): batch 20, 40 epochs; FT 5e-6, LoRA 2e-4, PrefixEmbed 2e-4, PrefixLayer 5e-5
TABLE17_LR = {"full": 5e-6, "lora_qv_r8": 2e-4, "pe_lp16_li8": 2e-4, "pl_lp8_li8": 5e-5}


def test_paper_scale_gpt3_tables_compose_to_tables_12_and_17_on_the_open_stand_in():
    for row, lr in TABLE12_LR.items():
        cfg = OmegaConf.to_container(compose(["experiment=table15", "scale=paper", f"row={row}"]), resolve=True)
        t = cfg["train"]
        assert (t["lr"], t["batch_size"], t["epochs"], t["weight_decay"], cfg["task"]["max_seq_len"]) == \
            (pytest.approx(lr), 128, 2, pytest.approx(0.1), 768), row
        assert cfg["model"]["name"] == "gpt2_large_cls" and cfg["task"]["n"] is None
    for row, lr in TABLE17_LR.items():
        cfg = OmegaConf.to_container(compose(["experiment=table16", "scale=paper", f"row={row}", "task.n=100"]),
                                     resolve=True)
        t = cfg["train"]
        assert (t["lr"], t["batch_size"], t["epochs"], cfg["task"]["max_seq_len"]) == \
            (pytest.approx(lr), 20, 40, 768), row
    local = compose(["experiment=table15", "scale=local", "row=lora_qv_r8"])
    assert local.model.name == "minilm"  # below paper scale the stand-in stays the scale's encoder


def test_differences_name_the_known_disagreements_and_the_committed_table_is_current():
    from paper import recipes

    found = {(d["model"], d["task"], d["field"]): (d["paper"], d["authors"]) for d in recipes.differences()}
    assert found[("gpt2", "e2e", "length_penalty")] == (0.9, 0.8)
    assert found[("roberta_base", "mnli", "alpha")] == (8, 16)
    assert found[("roberta_large", "cola", "lr")] == (2e-4, 3e-4)
    assert found[("deberta_v2_xxlarge", "cola", "lr")] == (1e-4, 1.3e-4)
    assert found[("roberta_base", "mnli", "batch_size")] == (16, 128)
    assert (REPO / "results" / "tables" / "recipes.md").read_text() == recipes.markdown(), \
        "results/tables/recipes.md is stale: run `make recipes`"


def test_unknown_recipe_and_paper_only_tables_fail_clearly():
    from experiments import schemas
    from experiments.train import validate

    with pytest.raises(Exception, match="no recipe 'nope'; known: authors, paper"):
        composed("table2", "rte", "lora_qv_r8", "recipe=nope")
    cfg = OmegaConf.to_object(compose(["experiment=table2_large", "scale=local", "row=lora_qv_r8"]))
    assert isinstance(cfg, schemas.Config)
    with pytest.raises(ValueError, match="runs at scale paper only"):
        validate(cfg)


def test_mnli_counterpart_keeps_every_override_but_the_task():
    from experiments.init_from import mnli_overrides

    assert mnli_overrides(["experiment=table2", "scale=paper", "task=rte", "row=lora_qv_r8", "seed=3",
                           "train.init_from=mnli"]) == \
        ["experiment=table2", "scale=paper", "row=lora_qv_r8", "seed=3", "task=mnli_n", "train.init_from="]


def test_init_from_loads_the_adapter_but_not_the_task_head(tmp_path):
    import lora
    import lora.io
    from lora.config import MethodConfig
    from tests.tiny import bert

    cfg = MethodConfig(name="lora", r=4, targets=["q", "v"])
    source = bert(num_labels=3)
    lora.apply_method(source, cfg)
    with torch.no_grad():
        for p in source.parameters():
            if p.requires_grad:
                p.normal_()  # B != 0, a trained-looking head
    lora.io.save_adapter(source, tmp_path / "adapter.safetensors")
    target = bert(num_labels=2)  # RTE: another head shape, as MNLI -> RTE
    lora.apply_method(target, cfg)
    head_before = {n: p.clone() for n, p in target.named_parameters() if "classifier" in n}
    lora.io.load_adapter(target, tmp_path / "adapter.safetensors", strict=False, skip=cfg.train_also)
    src = dict(source.named_parameters())
    lora_params = {n: p for n, p in target.named_parameters() if "lora_" in n}
    assert lora_params and all(torch.equal(p, src[n]) for n, p in lora_params.items())
    assert all(torch.equal(p, head_before[n]) for n, p in target.named_parameters() if "classifier" in n)


# ------------------------------------------------------------------------------ whole runs (CLI, real GLUE data)
def _cli(args: list[str], env: dict):
    import subprocess

    from tests.conftest import PY

    return subprocess.run([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.data
def test_rte_starts_from_its_seeds_mnli_run_and_is_evaluated_every_epoch(smoke, env, data_dir, tmp_path):
    import json

    if not (data_dir / "glue" / "RTE").is_dir():
        pytest.skip("needs the real GLUE data (LORA_DATA_DIR)")
    every_epoch = ["train.eval_every_epoch=true", "train.max_steps=-1", "train.epochs=2", "seed=3"]
    missing = _cli(smoke + every_epoch + ["task=rte", "train.init_from=mnli"], env)
    assert missing.returncode != 0 and "no finished MNLI run" in missing.stderr and "task=mnli_n" in missing.stderr
    assert not list((tmp_path / "results").glob("runs/smoke/adhoc/*/final.json"))  # a refused config writes nothing
    mnli = _cli(smoke + every_epoch, env)
    assert mnli.returncode == 0, mnli.stderr[-3000:]
    rte = _cli(smoke + every_epoch + ["task=rte", "train.init_from=mnli"], env)
    assert rte.returncode == 0, rte.stderr[-3000:]
    runs = {p.parent.name: p.parent for p in (tmp_path / "results").glob("runs/smoke/adhoc/*/final.json")}
    mnli_dir = next(d for n, d in runs.items() if "task=" not in n)
    rte_dir = next(d for n, d in runs.items() if "task=rte" in n)
    final = json.loads((rte_dir / "final.json").read_text())
    assert final["init_from"] == str(mnli_dir / "adapter.safetensors")
    # 64 examples / batch 16 = 4 steps an epoch, 2 epochs: evaluated after step 4 and at the end (step 8)
    evals = [json.loads(line) for line in (rte_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert [(r["step"], r["epoch"]) for r in evals] == [(4, 1.0), (8, 2.0)]
