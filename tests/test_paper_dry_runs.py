"""Paper-shape dry runs on the CPU: each paper table's real architecture (random weights, 2 layers), its paper-scale
recipe, real local data, 2 optimizer steps and 4 generated inputs, ends with status success.

What they prove: the paper scale composes, builds, trains, evaluates and writes its run directory for every model
and task family, with no GPU and no hub (the tokenizers are borrowed from the embedded models: their vocabularies
fit inside the paper models' embeddings). What they cannot: any number.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PY, REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.data]

DRY = ["scale=paper", "logger=none", "train.threads=2", "scale.max_train_examples=16", "scale.max_eval_examples=16",
       "scale.max_steps=2", "scale.generation.max_inputs=4", "scale.generation.max_val_examples=8",
       "train.eval_batch_size=8", "model.source=random"]
ENCODER = ["model.arch.num_hidden_layers=2", "model.tokenizer=minilm"]
# MiniLM's (BERT) tokenizer marks the second sentence with token type 1; RoBERTa's one type would not take it
ROBERTA = [*ENCODER, "model.arch.type_vocab_size=2"]
DECODER = ["model.arch.n_layer=2", "model.tokenizer=smollm2"]

CASES = {  # name -> overrides (each a run; `then` runs after `first` in the same results folder)
    "table2 RoBERTa base MNLI, then RTE from its adapter": (
        ["experiment=table2", "row=lora_qv_r8", "task.n=1000", *ROBERTA],  # the full MNLI train set needs the hub
        ["task=mnli_n"], ["task=rte"]),
    "table2_xxl DeBERTa XXL CoLA": (["experiment=table2_xxl", "row=lora_qv_r16", "task=cola", *ENCODER], [], None),
    "table2_large RoBERTa large Adapter^H SST-2": (
        ["experiment=table2_large", "row=adapter_h_r8", "task=sst2", *ROBERTA], [], None),
    "table3 GPT-2 M E2E": (["experiment=table3", "row=lora_qv_r4_a32", *DECODER], [], None),
    "table14 GPT-2 M WebNLG": (["experiment=table14", "row=lora_qv_r4_a32", *DECODER], [], None),
    "table16 GPT-2 Large classifier MNLI-100, LoRA": (
        ["experiment=table16", "row=lora_qv_r8", "task.n=100", *DECODER], [], None),
    "table18 GPT-2 M E2E, r=64": (["experiment=table18", "row=lora_qv_a32", "method.r=64", *DECODER], [], None),
    # Tables 5 and 6 are rows of Table 15's study (its model, budget and code path)
    "table15 GPT-2 Large classifier (GPT-3's stand-in) MNLI, PrefixLayer": (
        ["experiment=table15", "row=pl_lp8_li8", "task.n=1000", *DECODER], [], None),
}


def _run(args: list[str], env: dict) -> dict:
    proc = subprocess.run([str(PY), "-m", "experiments.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    finals = [json.loads(line.split(" ", 2)[2]) for line in proc.stdout.splitlines() if line.startswith("success: ")]
    assert finals, proc.stdout[-2000:]
    return finals[-1]


@pytest.mark.parametrize("name", list(CASES))
def test_paper_shape_dry_run(name, env, data_dir, tmp_path):
    if not (data_dir / "glue").is_dir() or not (data_dir / "e2e").is_dir():
        pytest.skip("needs the real local data (LORA_DATA_DIR)")
    common, first, then = CASES[name]
    args = DRY + common + [f"results_dir={tmp_path}"]
    metrics = _run(args + first, env)
    assert metrics, name
    if then is not None:
        _run(args + then, env)
    finals = [json.loads(p.read_text()) for p in tmp_path.glob("runs/paper/*/*/final.json")]
    assert finals and all(f["status"] == "success" for f in finals)
    assert all(f["scale"] == "paper" and f["steps"] == 2 for f in finals)
    if then is not None:  # RTE started from the MNLI run's adapter (appendix D.1)
        assert any(str(f.get("init_from", "")).endswith("adapter.safetensors") for f in finals)
