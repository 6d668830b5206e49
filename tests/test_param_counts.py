"""Exact trainable-parameter counts that follow from the paper's formulas (paper-size models on the meta device)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.count import count
from experiments.param_table import PAPER, parse_figure, render, within_rounding

REPO = Path(__file__).resolve().parents[1]
L3, D3 = 96, 12288  # GPT-3 175B: layers, d_model


def lora(L, d, r, n_types):  # the paper's |Θ| = 2·L·d_model·r per adapted matrix type (square matrices)
    return 2 * L * d * r * n_types


@pytest.mark.parametrize("r, targets, expected", [
    (8, "q,v", 37_748_736),
    (64, "q,k,v,o", 603_979_776),
    (2, "v", lora(L3, D3, 2, 1)),
    (2, "q,k,v,o", lora(L3, D3, 2, 4)),
])
def test_gpt3_lora(r, targets, expected):
    assert expected == lora(L3, D3, r, len(targets.split(",")))
    got = count("gpt3_175b", "lora", [f"method.r={r}", f"method.targets=[{targets}]"])
    assert got["method"] == got["trainable"] == expected


def test_gpt3_prefix_embed():
    got = count("gpt3_175b", "prefix_embed", ["method.l_p=32", "method.l_i=8"])
    assert got["method"] == D3 * (32 + 8)


def test_gpt3_prefix_layer():
    got = count("gpt3_175b", "prefix_layer", ["method.l_p=8", "method.l_i=8"])
    assert got["method"] == L3 * D3 * (8 + 8)


def test_gpt3_lora_plus_prefix_embed():
    got = count("gpt3_175b", "lora_pe", ["method.r=8", "method.l_p=8", "method.l_i=4"])
    assert got["method"] == lora(L3, D3, 8, 2) + D3 * 12


def test_gpt3_adapter_h_matches_table15():
    # L_Adpt = 2 adapters per block; the paper's Table 15 figures (7.1M ... 304.4M) leave out LayerNorm parameters
    got = count("gpt3_175b", "adapter_h", ["method.adapter_r=8"])
    assert round(got["method"] / 1e6, 1) == 40.1


def test_gpt3_full_is_175b():
    got = count("gpt3_175b", "full")
    assert got["trainable"] == got["total"] == got["method"]
    assert round(got["total"] / 1e9) == 175


def test_gpt2_medium_lora_r4():
    got = count("gpt2_medium", "lora", ["method.r=4", "method.targets=[q,v]"])
    assert got["method"] == 2 * 24 * 1024 * 4 * 2 == 393_216


def test_gpt2_medium_ft_top2():
    got = count("gpt2_medium", "ft_top", ["method.top_k=2"])
    assert round(got["method"] / 1e6, 2) == 25.19  # Table 3's FT^Top2 figure


def test_roberta_base_lora_excludes_the_new_head():
    got = count("roberta_base", "lora", ["method.r=8", "method.targets=[q,v]", "num_labels=3"])
    assert got["method"] == 294_912
    head = (768 * 768 + 768) + (768 * 3 + 3)  # classifier.dense + classifier.out_proj
    assert got["trainable"] == 294_912 + head


def test_roberta_base_bitfit():
    got = count("roberta_base", "bitfit")
    # per layer: q,k,v,o (4·768) + MLP in (3072) and out (768) + two LayerNorms (2·768); plus the embedding LayerNorm
    assert got["method"] == 12 * (4 * 768 + 3072 + 768 + 2 * 768) + 768


def test_count_cli_subprocess_last_line_is_json():
    proc = subprocess.run([sys.executable, "-m", "experiments.count", "model=roberta_base", "method=lora",
                           "method.r=8", "method.targets=[q,v]"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["method"] == 294_912 and last["total"] > last["trainable"] > last["method"]


def test_count_cli_wrong_name_lists_known(capsys):
    from experiments.count import main
    assert main(["model=gpt3", "method=lora"]) == 2
    assert "gpt3_175b" in capsys.readouterr().err
    assert main(["model=gpt3_175b", "method=loraa"]) == 2
    assert "lora_pe" in capsys.readouterr().err


def test_paper_figures_parse_and_round():
    assert parse_figure("37.7M") == (37.7e6, 0.05e6)
    assert parse_figure("175B") == (175e9, 0.5e9)
    assert within_rounding(37_748_736, "37.7M") and not within_rounding(37_748_736, "37.6M")
    for row in PAPER:  # every typed-in figure parses and names an existing model config
        parse_figure(row.paper)
        assert (REPO / "conf" / "model" / f"{row.model}.yaml").is_file()


def test_render_flags_unexplained_differences():
    row = PAPER[0]
    text = render([{"row": row, "ours": 1, "config": "x"}])
    assert "unexplained" in text


def test_embedded_model_counts_from_its_shipped_config():
    # MiniLM-L6: 6 layers, d=384; LoRA r=8 on q, v (no `arch` in its yaml: the package's config.json is read)
    assert count("minilm", "lora", [])["method"] == lora(6, 384, 8, 2)
