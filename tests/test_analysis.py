"""Tables and figures from synthetic run directories that follow the run-directory contract (DESIGN.md).

Known values in, exact cell text out: mean ± std over seeds, the difference to the paper, and "failed",
"diverged", "incomplete", "missing", "needs the hub", "needs <model>" where there is no number.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from analysis import tables
from analysis.__main__ import main
from analysis.catalog import TABLE_FUNCTIONS
from analysis.collect import aggregate, collect
from analysis.figures import figure3, figure4, figure8

SCALE = "local"
DEVIATION = "MiniLM-L6 instead of GPT-3 175B"


def make_run(results, experiment, name, *, method="lora", r=8, alpha=8, targets=("q", "v"), task="mnli", n=None,
             model="minilm", seed=0, status="success", metrics=None, train=None, l_p=8, l_i=8, adapter_r=8,
             steps=100, final=True, adapter=None, base=None, trainable=1234, method_extra=None):
    """One run directory: .hydra/config.yaml, metrics.jsonl, final.json (unless final=False), adapter, base weights."""
    d = results / "runs" / SCALE / experiment / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {"model": {"name": model, "family": "bert", "kind": "encoder", "source": "embedded",
                     "note": "MiniLM stand-in"},
           "method": {"name": method, "r": r, "alpha": alpha, "targets": list(targets), "adapter_r": adapter_r,
                      "drop_layers": 0, "l_p": l_p, "l_i": l_i, "top_k": 2} | (method_extra or {}),
           "task": {"name": task, "kind": "classification", "n": n, "max_eval_examples": 500},
           "train": {"lr": 2e-4, "epochs": 1, "batch_size": 16, "max_steps": steps} | (train or {}),
           "scale": {"name": SCALE, "deviations": [DEVIATION, "MNLI subset"]},
           "experiment": experiment, "seed": seed}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                                     for s in range(10, steps + 1, 10)))
    if final:
        (d / "final.json").write_text(json.dumps({
            "status": status, "error": None if status == "success" else "boom", "metrics": metrics or {},
            "params": {"trainable": trainable, "total": 22_000_000, "method": method}, "wall_time_s": 60.0,
            "peak_mem_mb": 100, "seed": seed, "scale": SCALE, "experiment": experiment}))
    if adapter is not None:
        save_file({k: torch.as_tensor(v, dtype=torch.float32).contiguous() for k, v in adapter.items()},
                  str(d / "adapter.safetensors"))
    if base is not None:
        save_file({k: torch.as_tensor(v, dtype=torch.float32).contiguous() for k, v in base.items()},
                  str(d / "base_weights.safetensors"))
    return d


def cell(result, row, column):
    c = result.cells
    hit = c[(c["row"] == row) & (c["column"] == column)]
    assert len(hit) == 1, (row, column)
    return hit.iloc[0]


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    # Table 15: LoRA r_q=r_v=8 with two seeds (0.80, 0.82) and a failed third; the others one status each
    make_run(res, "table15", "lora_r8_s0", seed=0, metrics={"eval_accuracy": 0.80})
    make_run(res, "table15", "lora_r8_s1", seed=1, metrics={"eval_accuracy": 0.82})
    make_run(res, "table15", "lora_r8_s2", seed=2, status="failed")
    make_run(res, "table15", "pe256", method="prefix_embed", l_p=256, l_i=8, status="failed")
    make_run(res, "table15", "pl88", method="prefix_layer", l_p=8, l_i=8, status="diverged",
             metrics={"eval_accuracy": float("nan")})
    make_run(res, "table15", "adh8", method="adapter_h", adapter_r=8, final=False)
    (res / "tables").mkdir(parents=True)
    pd.DataFrame([{"table": "Table 15 (GPT-3)", "model": "gpt3_175b", "method": "LoRA",
                   "hyperparameters": "r_q=r_v=8", "paper": "37.7M", "ours": "37,748,736"},
                  {"table": "Table 15 (GPT-3)", "model": "gpt3_175b", "method": "Fine-Tune",
                   "hyperparameters": "–", "paper": "175B", "ours": "174,604,259,328"}]
                 ).to_csv(res / "tables" / "params.csv", index=False)
    return res


def test_collect_statuses_and_aggregate(results):
    frame = collect(results, SCALE)
    assert len(frame) == 6
    assert sorted(frame["status"]) == ["diverged", "failed", "failed", "incomplete", "success", "success"]
    assert set(frame.loc[frame["method"] == "lora", "targets"]) == {"q,v"}
    assert frame["steps"].dropna().unique().tolist() == [100]
    agg = aggregate(frame[frame["method"] == "lora"], ["method", "r"], "accuracy", "percent")
    row = agg.iloc[0]
    assert row["mean"] == pytest.approx(81.0)
    assert row["std"] == pytest.approx(math.sqrt(2) * 1.0)  # sample std of 80, 82
    assert (row["n_seeds"], row["n_failed"], row["seeds"]) == (2, 1, [0, 1])


def test_table15_cells_footer_and_files(results):
    frame = collect(results, SCALE)
    res = tables.table15(frame, SCALE, results=results)
    lora = cell(res, "LoRA r_q=r_v=8", "MNLI-m")
    assert lora["ours"] == "81.0 ± 1.4 (n=2); failed"
    assert lora["diff"] == pytest.approx(81.0 - 91.6)
    assert cell(res, "PrefixEmbed l_p=256, l_i=8", "MNLI-m")["ours"] == "failed"
    assert cell(res, "PrefixLayer l_p=8, l_i=8", "MNLI-m")["ours"] == "diverged"
    assert cell(res, "Adapter^H r=8", "MNLI-m")["ours"] == "incomplete"
    assert cell(res, "LoRA r_q=r_v=4", "MNLI-m")["ours"] == "missing"
    assert cell(res, "LoRA r_q=r_v=8", "WikiSQL")["ours"] == "needs the hub"
    md = (results / "tables" / SCALE / "table15.md").read_text()
    assert "| LoRA r_q=r_v=8 | 37.7M | 37.75M | 1,234 | 73.8 | needs the hub | — | 91.6 | 81.0 ± 1.4 (n=2); failed " \
           "| -10.6 |" in md
    assert "| Fine-Tune | 175B | 174.6B |" in md
    assert "| PrefixEmbed l_p=32, l_i=8 | 0.4M | — | — |" in md  # no count in params.csv, no run
    for text in (f"- {DEVIATION}", "MNLI subset", "`minilm` (MiniLM stand-in)", "- Seeds: 0, 1, 2", "Steps (last "
                 "logged): 100", "Scale `local`", "max_eval_examples=500"):
        assert text in md, text
    csv = pd.read_csv(results / "tables" / SCALE / "table15.csv")
    assert len(csv) == 60 and set(csv["status"]) >= {"ok", "failed", "diverged", "incomplete", "missing",
                                                     "needs the hub"}
    assert not list((results / "tables" / SCALE).glob("*.tmp"))  # atomic writes leave no temp files


def test_table16_and_17_match_n_and_hyperparameters(tmp_path):
    res = tmp_path / "results"
    make_run(res, "table16", "lora_n100", n=100, metrics={"eval_accuracy": 0.5}, train={"batch_size": 20,
                                                                                           "lr": 1e-4})
    make_run(res, "table16", "pe_n100_lp16", method="prefix_embed", n=100, l_p=16, metrics={"eval_accuracy": 0.4})
    make_run(res, "table16", "pe_n1k_wrong_lp", method="prefix_embed", n=1000, l_p=256,
             metrics={"eval_accuracy": 0.9})
    make_run(res, "table16", "lora_full", n=None, metrics={"eval_accuracy": 0.7})
    frame = collect(res, SCALE)
    t16 = tables.table16(frame, SCALE, results=res)
    assert cell(t16, "GPT-3 (LoRA)", "MNLI(m)-100")["ours"] == "50.0 (n=1)"
    assert cell(t16, "GPT-3 (LoRA)", "MNLI(m)-100")["diff"] == pytest.approx(50.0 - 63.8)
    assert cell(t16, "GPT-3 (LoRA)", "MNLI(m)-392K")["ours"] == "70.0 (n=1)"
    assert cell(t16, "GPT-3 (PrefixEmbed)", "MNLI(m)-100")["ours"] == "40.0 (n=1)"
    assert cell(t16, "GPT-3 (PrefixEmbed)", "MNLI(m)-1k")["ours"] == "missing"  # l_p=256 is not Table 17's 32
    assert cell(t16, "GPT-3 (Fine-Tune)", "MNLI(m)-10k")["ours"] == "needs the hub"  # 9,999 pairs offline; no run
    md = t16.markdown
    assert "| GPT-3 (LoRA) | 63.8 | 50.0 (n=1) | -13.8 |" in md

    t17 = tables.table17(frame, SCALE, results=res)
    c = t17.cells
    bs = c[(c["row"] == "Batch Size (all)") & (c["column"] == "MNLI(m)-100")].iloc[0]
    assert (bs["ours"], bs["same"]) == ("16, 20", "differs")
    lr = c[(c["row"] == "Learning Rate (lora)") & (c["column"] == "MNLI(m)-100")].iloc[0]
    assert (lr["ours"], lr["same"]) == ("0.0001", "differs")
    lr_full = c[(c["row"] == "Learning Rate (lora)") & (c["column"] == "MNLI(m)-392K")].iloc[0]
    assert (lr_full["ours"], lr_full["same"]) == ("0.0002", "same")
    r = c[(c["row"] == "LoRA r_q = r_v (lora)") & (c["column"] == "MNLI(m)-100")].iloc[0]
    assert r["same"] == "same"
    assert c[(c["row"] == "Learning Rate (full)")]["ours"].tolist() == ["missing"] * 4
    assert (res / "tables" / SCALE / "table17.md").exists()


def test_table5_and_6_weight_types_and_ranks(tmp_path):
    res = tmp_path / "results"
    # both tables read Table 15's MNLI study (their sweeps run into its folder); a run elsewhere is not theirs
    make_run(res, "table15", "wq_r8", r=8, targets=("q",), metrics={"eval_accuracy": 0.9})
    make_run(res, "table15", "wqv_r1", r=1, targets=("v", "q"), metrics={"eval_accuracy": 0.88})
    make_run(res, "table5", "wk_r8", r=8, targets=("k",), metrics={"eval_accuracy": 0.5})
    frame = collect(res, SCALE)
    t5 = tables.table5(frame, SCALE, results=res)
    assert cell(t5, "W_q, r=8", "MultiNLI (±0.1%)")["ours"] == "90.0 (n=1)"
    assert cell(t5, "W_q, r=8", "MultiNLI (±0.1%)")["diff"] == pytest.approx(-1.0)
    assert cell(t5, "W_q, r=8", "WikiSQL (±0.5%)")["ours"] == "needs the hub"
    assert cell(t5, "W_k, r=8", "MultiNLI (±0.1%)")["ours"] == "missing"
    t6 = tables.table6(frame, SCALE, results=res)
    assert cell(t6, "MultiNLI W_q, W_v", "r=1")["ours"] == "88.0 (n=1)"  # targets [v, q] == [q, v]
    assert cell(t6, "MultiNLI W_q, W_v", "r=2")["ours"] == "missing"
    assert cell(t6, "WikiSQL W_q, W_v", "r=1")["ours"] == "needs the hub"


def test_generation_tables_units_and_paper_models(tmp_path):
    res = tmp_path / "results"
    # the keys and scales the runner writes (experiments/generate.py): E2E BLEU/METEOR/ROUGE_L x100, NIST and CIDEr
    # raw; WebNLG eval_<part>_BLEU x100, METEOR and TER as fractions
    gen = {"eval_BLEU": 70.0, "eval_NIST": 8.5, "eval_METEOR": 45.0, "eval_ROUGE_L": 70.0, "eval_CIDEr": 2.4,
           "val_loss": 1.5}
    for seed, bleu in ((0, 70.0), (1, 72.0)):
        make_run(res, "table18", f"r4_s{seed}", r=4, alpha=32, task="e2e", model="smollm2", seed=seed,
                 metrics=gen | {"eval_BLEU": bleu})
    make_run(res, "table3", "lora", r=4, alpha=32, task="e2e", model="smollm2", metrics=gen)
    make_run(res, "table14", "lora", r=4, alpha=32, task="webnlg", model="smollm2",
             metrics={"eval_U_BLEU": 40.0, "eval_S_BLEU": 60.0, "eval_A_BLEU": 50.0, "eval_A_TER": 0.5})
    frame = collect(res, SCALE)
    t18 = tables.table18(frame, SCALE, results=res)
    assert cell(t18, "r=4", "BLEU")["ours"] == "71.00 ± 1.41 (n=2)"
    assert cell(t18, "r=4", "BLEU")["diff"] == pytest.approx(71.0 - 70.38)
    assert cell(t18, "r=4", "METEOR")["ours"] == "0.4500 ± 0.0000 (n=2)"
    assert cell(t18, "r=4", "val_loss")["ours"] == "1.50 ± 0.00 (n=2)"
    assert cell(t18, "r=8", "BLEU")["ours"] == "missing"
    assert "| r=4 | 1.18 | 1.50 ± 0.00 (n=2) | +0.32 |" in t18.markdown
    t3 = tables.table3(frame, SCALE, results=res)
    assert cell(t3, "GPT-2 M (LoRA)", "MET")["ours"] == "45.0 (n=1)"  # Table 3 prints MET in %
    assert cell(t3, "GPT-2 M (LoRA)", "MET")["diff"] == pytest.approx(45.0 - 46.8)
    assert cell(t3, "GPT-2 L (LoRA)", "BLEU")["ours"] == "needs gpt2_large"
    assert cell(t3, "GPT-2 M (FT)*", "BLEU")["ours"] == "missing"
    t14 = tables.table14(frame, SCALE, results=res)
    assert cell(t14, "GPT-2 M LoRA (0.35M)", "BLEU U")["ours"] == "40.0 (n=1)"
    assert cell(t14, "GPT-2 M LoRA (0.35M)", "BLEU S")["ours"] == "60.0 (n=1)"
    assert cell(t14, "GPT-2 M LoRA (0.35M)", "BLEU A")["ours"] == "50.0 (n=1)"
    assert cell(t14, "GPT-2 M LoRA (0.35M)", "TER A")["ours"] == "0.50 (n=1)"
    assert cell(t14, "GPT-2 M LoRA (0.35M)", "MET U")["ours"] == "no METEOR in final.json"


def test_table2_glue_average_needs_every_task(tmp_path):
    res = tmp_path / "results"
    make_run(res, "table2", "mnli", task="mnli", metrics={"eval_accuracy": 0.8})
    make_run(res, "table2", "cola", task="cola", metrics={"eval_matthews_correlation": 0.5})
    frame = collect(res, SCALE)
    t2 = tables.table2(frame, SCALE, results=res)
    assert cell(t2, "RoB_base (LoRA)", "MNLI")["ours"] == "80.0 (n=1)"
    assert cell(t2, "RoB_base (LoRA)", "CoLA")["ours"] == "50.0 (n=1)"
    assert cell(t2, "RoB_base (LoRA)", "Avg.")["ours"] == "needs all 8 tasks"
    assert cell(t2, "RoB_large (LoRA)", "MNLI")["ours"] == "needs roberta_large"
    assert cell(t2, "RoB_large (LoRA)†", "MNLI")["ours"] == "needs roberta_large"


def lora_adapter(A_q, B_q, layers=(0, 1, 2)):
    out = {}
    for l in layers:
        for role, mod in (("q", "query"), ("v", "value")):
            out[f"bert.encoder.layer.{l}.attention.self.{mod}.lora_A"] = A_q
            out[f"bert.encoder.layer.{l}.attention.self.{mod}.lora_B"] = B_q
    return out


@pytest.fixture
def subspace_runs(tmp_path):
    """LoRA runs at r=4 (seed 0) and r=8, r=64 (seeds 0, 1) with adapters; r=4 and r=8 also save base weights."""
    res = tmp_path / "results"
    rng = np.random.default_rng(0)
    d = 16
    Wq = np.diag(np.arange(d, 0, -1.0))
    base = {f"bert.encoder.layer.{l}.attention.self.{m}.weight": Wq for l in range(3) for m in ("query", "value")}
    for r, seeds in ((4, (0,)), (8, (0, 1)), (64, (0, 1))):
        for seed in seeds:
            A, B = rng.standard_normal((r, d)), rng.standard_normal((d, r))
            make_run(res, "figures", f"r{r}_s{seed}", r=r, alpha=r, seed=seed, metrics={"eval_accuracy": 0.8},
                     adapter=lora_adapter(A, B), base=base if r in (4, 8) else None)
    return res


def test_table7_from_adapter_and_base_weights(subspace_runs):
    from analysis import subspace

    frame = collect(subspace_runs, SCALE)
    t7 = tables.table7(frame, SCALE, results=subspace_runs, experiments=None)
    run_dir = subspace_runs / "runs" / SCALE / "figures" / "r4_s0"
    pairs = subspace.load_lora(run_dir / "adapter.safetensors")
    W = np.diag(np.arange(16, 0, -1.0))
    expected = subspace.delta_vs_w(W, pairs[(1, "q")].delta(1.0), 4)  # the middle layer of 0, 1, 2
    got = cell(t7, "r=4", "delta")
    assert got["ours_mean"] == pytest.approx(expected.delta, rel=1e-5)
    assert cell(t7, "r=4", "amplification")["ours_mean"] == pytest.approx(expected.amplification, rel=1e-5)
    assert cell(t7, "r=4", "w")["ours"] == f"{math.sqrt(16**2 + 15**2 + 14**2 + 13**2):.2f} (n=1)"
    assert cell(t7, "r=64", "delta")["ours"].startswith("unavailable: r64_s")
    assert "has no base_weights.safetensors" in cell(t7, "r=64", "delta")["ours"]


def test_figures_drawn_or_explained(subspace_runs, tmp_path):
    frame = collect(subspace_runs, SCALE)
    out = tmp_path / "figs"
    f3 = figure3(frame, SCALE, out_dir=out)
    f4 = figure4(frame, SCALE, out_dir=out)
    f8 = figure8(frame, SCALE, out_dir=out)
    for f in (f3, f4, f8):
        assert [p.suffix for p in f.paths] == [".png", ".pdf"], f.message
        assert all(p.stat().st_size > 0 for p in f.paths)
    empty = collect(tmp_path / "nothing", SCALE)
    for fn in (figure3, figure4, figure8):
        res = fn(empty, SCALE, out_dir=out / "none")
        assert res.paths == () and "needs" in res.message
    assert not (out / "none").exists()


def test_learning_curves_draw_every_seed_of_the_headline_rows(tmp_path):
    from analysis.figures import learning_curves

    res = tmp_path / "results"
    for method, r in (("full", 8), ("lora", 8)):
        for seed in (0, 1):
            d = make_run(res, "table2", f"{method},{seed}", method=method, r=r, seed=seed,
                         metrics={"eval_accuracy": 0.5})
            (d / "metrics.jsonl").write_text("".join(
                json.dumps({"step": s, "split": "train", "loss": 1.1 - 0.001 * s}) + "\n" for s in range(10, 91, 10)))
    fig = learning_curves(collect(res, SCALE), SCALE, out_dir=tmp_path / "figs")
    assert [p.suffix for p in fig.paths] == [".png", ".pdf"]
    # the last third (steps 60-90): 1.04 -> 1.01
    assert "MNLI (Table 2) LoRA r=8: the last third of the run lowered the loss 2.9%" in fig.message
    assert "n=2" in fig.message and "E2E" not in fig.message


def test_cli_writes_every_table(results, capsys):
    assert main(["tables", "--scale", SCALE, "--results", str(results)]) == 0
    written = sorted(p.name for p in (results / "tables" / SCALE).glob("*.md"))
    assert written == sorted(f"{t}.md" for t in TABLE_FUNCTIONS)
    assert "table15:" in capsys.readouterr().out
    assert main(["figures", "--scale", SCALE, "--results", str(results)]) == 0
    assert "figure3: needs" in capsys.readouterr().out


def test_cli_never_empties_committed_cells_without_force(results, capsys):
    """A rebuild from fewer runs (a fresh clone, another session) keeps the committed table unless --force."""
    import shutil

    assert main(["tables", "--scale", SCALE, "--results", str(results), "--table", "table15"]) == 0
    committed = (results / "tables" / SCALE / "table15.md").read_text()
    shutil.rmtree(results / "runs" / SCALE / "table15" / "lora_r8_s1")  # one of LoRA r=8's two seeds
    shutil.rmtree(results / "runs" / SCALE / "table15" / "lora_r8_s0")
    capsys.readouterr()
    assert main(["tables", "--scale", SCALE, "--results", str(results), "--table", "table15"]) == 1
    out = capsys.readouterr().out
    assert "kept" in out and "LoRA" in out and "--force" in out
    assert (results / "tables" / SCALE / "table15.md").read_text() == committed
    assert main(["tables", "--scale", SCALE, "--results", str(results), "--table", "table15", "--force"]) == 0
    assert (results / "tables" / SCALE / "table15.md").read_text() != committed


def test_cli_names_the_scales_it_found_for_an_empty_or_misspelt_folder(results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["tables", "--scale", "locl", "--results", str(results)])
    assert f"scales with runs there: {SCALE}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tables", "--scale", SCALE, "--results", str(tmp_path / "empty")])
    assert "scales with runs there: none" in capsys.readouterr().err


def test_lr_search_marks_the_best_rate_on_held_out_train_pairs(tmp_path):
    """val_accuracy (held out of train) picks the rate, never eval_accuracy (the dev split the table reports)."""
    from analysis.lr_search import lr_search

    for lr, val, dev in ((1e-3, 0.40, 0.60), (4e-3, 0.50, 0.45)):
        make_run(tmp_path, "table15_lr", f"lr={lr}", train={"lr": lr},
                 metrics={"val_accuracy": val, "eval_accuracy": dev, "train_loss": 1.0})
    make_run(tmp_path, "table15_lr", "lr=0.016", train={"lr": 1.6e-2}, status="diverged", metrics={})
    result = lr_search(collect(tmp_path, SCALE), SCALE, out_dir=tmp_path / "out")
    best = result.cells[result.cells["best"]]
    assert best["lr"].tolist() == [4e-3] and best["val_accuracy"].tolist() == pytest.approx([50.0])
    assert result.cells.set_index("lr").loc[1.6e-2, "other_runs"] == "diverged 1"
    assert "◀ best" in result.markdown and (tmp_path / "out" / "table15_lr.md").exists()


def test_mnli_full_dev_table_and_its_claim(tmp_path):
    """mnli_full_dev: one row per dev split size, one column per method; the ledger compares lora with full there."""
    from analysis.claims import evaluate
    from analysis.studies import mnli_full_dev

    res = tmp_path / "results"
    for method, acc in (("full", 0.470), ("lora", 0.465)):
        for seed in range(5):
            d = make_run(res, "mnli_full_dev", f"{method},{seed}", method=method, seed=seed,
                         metrics={"eval_accuracy": acc + 0.001 * seed})
            final = json.loads((d / "final.json").read_text()) | {"eval_examples": {"eval": 9815}}
            (d / "final.json").write_text(json.dumps(final))
    result = mnli_full_dev(collect(res, SCALE), SCALE, results=res)
    cells = result.cells.set_index(["row", "column"])
    assert cells.loc[("dev-matched, 9,815 pairs", "lora"), "ours_mean"] == pytest.approx(46.7)
    assert cells.loc[("dev-matched, 9,815 pairs", "full"), "n_seeds"] == 5
    by_key = {c.key: (parts, verdict) for c, parts, verdict in evaluate(res, SCALE)}
    parts, verdict = by_key["lora-ft-mnli-full-dev"]
    assert verdict == "supported" and parts[0].estimate.value == pytest.approx(-0.5)


def test_e2e_full_test_tables_read_only_their_study_and_feed_their_claims(tmp_path):
    """e2e_full_test(_r): Table 3's and Table 18's rows from the study's runs only (a table3 run is not one of
    them); the ledger's full-test claims compare LoRA with full FT and the ranks with the best rank there."""
    from analysis.claims import evaluate
    from analysis.studies import e2e_full_test, e2e_full_test_r

    res = tmp_path / "results"
    rows = {"lora": dict(method="lora", r=4, alpha=32), "full": dict(method="full"),
            "r16": dict(method="lora", r=16, alpha=32)}
    bleu = {"lora": 60.0, "full": 61.0, "r16": 50.0}
    for name, kw in rows.items():
        for seed in range(3):
            make_run(res, "e2e_full_test", f"{name},{seed}", task="e2e", model="smollm2", seed=seed, **kw,
                     metrics={"eval_BLEU": bleu[name] + 0.1 * seed, "val_loss": 1.5})
    make_run(res, "table3", "lora", r=4, alpha=32, task="e2e", model="smollm2", metrics={"eval_BLEU": 10.0})
    frame = collect(res, SCALE)
    t = e2e_full_test(frame, SCALE, results=res)
    assert cell(t, "GPT-2 M (LoRA)", "BLEU")["ours_mean"] == pytest.approx(60.1)
    assert cell(t, "GPT-2 M (FT)*", "BLEU")["n_seeds"] == 3
    assert cell(t, "GPT-2 M (Adapter^L)* 0.37M", "BLEU")["ours"] == "missing"
    assert set(t.cells["row"]) == {"GPT-2 M (FT)*", "GPT-2 M (Adapter^L)* 0.37M", "GPT-2 M (LoRA)"}
    tr = e2e_full_test_r(frame, SCALE, results=res)
    assert cell(tr, "r=4", "BLEU")["ours_mean"] == pytest.approx(60.1)
    assert cell(tr, "r=16", "BLEU")["ours_mean"] == pytest.approx(50.1)
    by_key = {c.key: (parts, verdict) for c, parts, verdict in evaluate(res, SCALE)}
    parts, verdict = by_key["lora-ft-e2e-full-test"]
    assert verdict == "supported" and parts[0].estimate.value == pytest.approx(-1.0)
    parts, verdict = by_key["flat-in-r-e2e-full-test"]
    assert verdict == "contradicted" and [p.estimate.value for p in parts] == pytest.approx([-10.0])
    assert by_key["lora-adapter-e2e-full-test"][1] == "undecided"


def test_plateau_recipe_takes_the_lowest_val_loss_and_fewer_epochs_within_the_tolerance(tmp_path):
    from analysis.studies import mnli_plateau_lr, plateau_recipe

    cells = pd.DataFrame({"lr": [1e-3, 1e-3, 4e-3, 4e-3], "epochs": [1, 4, 1, 4], "val_loss": [1.10, 0.95, 0.958, 0.97]})
    assert plateau_recipe(cells) == (4e-3, 1)  # 0.958 is within 0.01 of 0.95 with 1 epoch instead of 4
    assert plateau_recipe(cells, tolerance=0.005) == (1e-3, 4)
    res = tmp_path / "results"
    for (lr, epochs, loss) in cells.itertuples(index=False):
        make_run(res, "mnli_plateau_lr", f"lr={lr},e={epochs}", train={"lr": lr, "epochs": epochs},
                 metrics={"val_loss": loss, "val_accuracy": 0.5, "train_loss": 1.0})
    result = mnli_plateau_lr(collect(res, SCALE), SCALE, results=res)
    picked = result.cells[result.cells["recipe"]]
    assert picked[["lr", "epochs"]].values.tolist() == [[4e-3, 1]]
    assert "- lora: lr 0.004, 1 epoch" in result.markdown


def test_mnli_plateau_compares_the_one_epoch_runs_with_the_long_runs_best_epoch(tmp_path):
    """mnli_plateau: mean val_loss per epoch over seeds from metrics.jsonl's eval rows; a method's plateau is its
    long runs' lowest mean, and the 1-epoch runs are at it within 0.01 (full: 0.05 above, not; lora: below)."""
    from analysis.figures import learning_curves
    from analysis.studies import mnli_plateau

    res = tmp_path / "results"
    long_runs = {"full": (1.00, 0.95, 0.97), "lora": (0.93, 0.895, 0.92)}  # val_loss after epochs 1, 2, 3
    one_epoch = {"full": 1.00, "lora": 0.89}
    for method in long_runs:
        for seed in range(2):
            for epochs, curve in ((3, long_runs[method]), (1, (one_epoch[method],))):
                d = make_run(res, "mnli_plateau", f"{method},{epochs},{seed}", method=method, seed=seed,
                             train={"epochs": epochs}, metrics={"eval_accuracy": 0.5, "val_loss": curve[-1]})
                rows = [{"step": 10 * e, "split": "eval", "epoch": float(e), "val_loss": v + 0.01 * (seed - 0.5),
                         "val_accuracy": 0.5, "eval_accuracy": 0.4} for e, v in enumerate(curve, start=1)]
                if epochs == 1 and seed == 1:  # a shared run logged before eval rows carried their epoch
                    del rows[0]["epoch"]
                with (d / "metrics.jsonl").open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
    result = mnli_plateau(collect(res, SCALE), SCALE, results=res)
    cells = result.cells.set_index(["row", "column"])
    assert cells.loc[("full, 3 epochs", "epoch 2"), "ours_mean"] == pytest.approx(0.95)
    assert cells.loc[("full, 3 epochs", "epoch 3"), "n_seeds"] == 2
    assert cells.loc[("lora, 1 epoch", "epoch 1"), "ours_mean"] == pytest.approx(0.89)
    assert "- full: the 3-epoch runs' lowest mean val_loss is after epoch 2 (0.9500); the 1-epoch runs (the " \
           "headline budget) end at 1.0000, 0.0500 above it: not at the plateau" in result.markdown
    assert "end at 0.8900, 0.0050 below it: at the plateau" in result.markdown
    fig = learning_curves(collect(res, SCALE), SCALE, out_dir=tmp_path / "figs")  # its held-out panel, no headlines
    assert (tmp_path / "figs" / "learning_curves.png").exists() and fig.paths


def test_lr_search_of_a_variant_names_it_and_marks_the_rate_its_table_runs(tmp_path):
    """rank_scaling_lr holds alpha / sqrt(r)'s and LoRA+'s searches: one method label each, and "used by" marks the
    rate rank_scaling_rs / rank_scaling_plus sweep (conf/tables/table15.yaml)."""
    from analysis.lr_search import rank_scaling_lr, swept_lr

    plus = swept_lr("rank_scaling_plus")
    for lr in (plus / 2, plus, plus * 2):
        make_run(tmp_path, "rank_scaling_lr", f"plus,{lr}", r=4, train={"lr": lr}, method_extra={"lr_ratio_b": 16.0},
                 metrics={"val_accuracy": 0.4 + (lr == plus) * 0.05, "train_loss": 1.0})
    make_run(tmp_path, "rank_scaling_lr", "rs", r=4, train={"lr": swept_lr("rank_scaling_rs")},
             method_extra={"scaling": "rs"}, metrics={"val_accuracy": 0.45, "train_loss": 1.0})
    cells = rank_scaling_lr(collect(tmp_path, SCALE), SCALE, out_dir=tmp_path / "out").cells
    assert set(cells["method"]) == {"lora LoRA+ (B x16)", "lora alpha/sqrt(r)"}
    used = cells[cells["in_budget"]]
    assert sorted(zip(used["method"], used["lr"])) == sorted([("lora LoRA+ (B x16)", plus),
                                                               ("lora alpha/sqrt(r)", swept_lr("rank_scaling_rs"))])
    assert cells[cells["best"] & cells["method"].str.contains("LoRA+")]["lr"].tolist() == [plus]


def test_subspace_similarity_is_phi_11_of_the_adapters_and_a_gaussian_null(subspace_runs, tmp_path):
    """Figures 3 and 4 as numbers: φ(1, 1) of A_r=8 vs A_r=64 per seed (mean over layers), of two seeds' A_r=64,
    and of Gaussian matrices (about 1/d)."""
    from analysis import subspace
    from analysis.similarity import subspace_similarity

    result = subspace_similarity(collect(subspace_runs, SCALE), SCALE, out_dir=tmp_path / "out",
                                 experiments=("figures",))
    cells = result.cells.set_index("row")
    runs = subspace_runs / "runs" / SCALE / "figures"
    expected = []
    for seed in (0, 1):
        a8, a64 = (subspace.load_lora(runs / f"r{r}_s{seed}" / "adapter.safetensors") for r in (8, 64))
        expected.append(np.mean([subspace.phi(a8[(l, "q")].A.T, a64[(l, "q")].A.T, 1, 1) for l in range(3)]))
    same = cells.loc["ΔW_q: A_r=8 vs A_r=64, same seed"]
    assert same["ours_mean"] == pytest.approx(np.mean(expected)) and same["n_seeds"] == 2
    assert cells.loc["ΔW_v: A_r=64 seed a vs seed b", "n_seeds"] == 1
    assert cells.loc["random: A_r=64 vs A_r=64", "ours_mean"] == pytest.approx(1 / 16, abs=0.03)  # d = 16


def test_rank_scaling_subspace_figure_has_a_panel_row_per_variant(subspace_runs, tmp_path):
    from analysis.figures import rank_scaling_subspace

    res = tmp_path / "results"
    rng = np.random.default_rng(1)
    for scaling, lr in (("standard", 4e-3), ("rs", 2e-3)):
        for r in (4, 64):
            make_run(res, "rank_scaling", f"{scaling},{r}", r=r, train={"lr": lr}, method_extra={"scaling": scaling},
                     metrics={"eval_accuracy": 0.5}, adapter=lora_adapter(rng.standard_normal((r, 16)),
                                                                         rng.standard_normal((16, r))))
    fig = rank_scaling_subspace(collect(res, SCALE), SCALE, out_dir=tmp_path / "figs")
    assert [p.suffix for p in fig.paths] == [".png", ".pdf"]
    assert fig.message == "rank_scaling_subspace: alpha/r, alpha/sqrt(r), own rate"
    assert "needs" in rank_scaling_subspace(collect(tmp_path / "none", SCALE), SCALE, out_dir=tmp_path / "x").message


def _tidy(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([dict(table=path.stem, scale=SCALE, row=r, column=c, ours_mean=m, ours_std=s, n_seeds=n, eval_n=e)
                  for r, c, m, s, n, e in rows]).to_csv(path, index=False)


def test_claims_ledger_decides_by_its_rules(tmp_path):
    """Equivalence supported inside the margin, contradicted outside it, undecided without an interval."""
    from analysis.claims import evaluate, write

    res = tmp_path / "results"
    lora, ft, drop = "RoB_base (LoRA)", "RoB_base (FT)*", "RoB_base (Adpt^D)* 0.3M"
    _tidy(res / "tables" / SCALE / "table2.csv", [
        (lora, "MNLI", 80.0, 0.3, 5, 9815), (ft, "MNLI", 80.2, 0.3, 5, 9815),     # ±0.4: inside ±2
        (lora, "SST-2", 90.0, None, 1, 872), (ft, "SST-2", 80.0, None, 1, 872),   # binomial ±3.6: outside ±2
        (lora, "CoLA", 40.0, None, 1, 1043), (ft, "CoLA", 41.0, None, 1, 1043),   # Matthews: no interval, 1 seed
        (drop, "MNLI", 80.0, 0.3, 5, 9815)])
    by_key = {c.key: (parts, verdict) for c, parts, verdict in evaluate(res, SCALE)}
    parts, verdict = by_key["lora-ft-glue"]
    got = {p.label: p.verdict for p in parts}
    assert got["MNLI"] == "supported" and got["SST-2"] == "contradicted" and got["CoLA"] == "undecided"
    assert got["MRPC"] == "undecided" and verdict == "contradicted"  # MRPC: no run  # any contradicted part decides the claim
    assert abs(parts[0].estimate.half - 2.776 * 0.3 / 5 ** 0.5 * 2 ** 0.5) < 1e-9  # t(0.975, 4), two cells
    assert by_key["merged-no-latency"][1] == "undecided"  # no benchmark summary here

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- claims:start -->\nold typed findings\n<!-- claims:end -->\nrest\n")
    page, _ = write(res, SCALE, readme)
    text = readme.read_text()
    assert "old typed findings" not in text and "**contradicted**: LoRA matches full fine-tuning" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
    assert "Rule: A ≈ B per task" in page.read_text()


def test_section7_claims_read_the_subspace_tables(tmp_path):
    """directions-shared: φ(1, 1) above 0.5 (r=8 vs r=64) and above the Gaussian null (seed vs seed);
    delta-w-amplifies: Table 7's cells, each difference above 0."""
    from analysis.claims import evaluate

    res = tmp_path / "results"
    _tidy(res / "tables" / SCALE / "subspace_similarity.csv", [
        ("ΔW_q: A_r=8 vs A_r=64, same seed", "φ(1,1)", 0.80, 0.05, 3, None),   # above 0.5
        ("ΔW_v: A_r=8 vs A_r=64, same seed", "φ(1,1)", 0.20, 0.05, 3, None),   # below 0.5
        ("ΔW_q: A_r=64 seed a vs seed b", "φ(1,1)", 0.30, 0.02, 3, None),
        ("ΔW_v: A_r=64 seed a vs seed b", "φ(1,1)", 0.01, 0.02, 3, None),
        ("random: A_r=64 vs A_r=64", "φ(1,1)", 0.003, 0.003, 200, None)])
    _tidy(res / "tables" / SCALE / "table7.csv", [
        ("r=4", "delta", 0.9, 0.1, 3, None), ("r=4", "random", 0.1, 0.0, 3, None), ("r=4", "w", 5.0, 0.1, 3, None),
        ("r=4", "amplification", 20.0, 1.0, 3, None), ("r=64", "amplification", 2.0, 0.5, 3, None)])
    by_key = {c.key: (parts, verdict) for c, parts, verdict in evaluate(res, SCALE)}
    parts, verdict = by_key["directions-shared"]
    assert [p.verdict for p in parts] == ["supported", "contradicted", "supported", "undecided"]
    assert verdict == "contradicted"
    parts, verdict = by_key["delta-w-amplifies"]
    assert [p.verdict for p in parts] == ["supported"] * 3 and verdict == "supported"


def test_committed_tables_rebuild_from_the_committed_run_records(tmp_path):
    """A fresh clone: `python -m analysis tables` over results/runs/local leaves every committed table as it is
    (tables whose runs are all committed rebuild to the same bytes; the others are kept, not emptied)."""
    import shutil

    repo_results = tables.REPO / "results"
    if not (repo_results / "runs" / "local").is_dir():
        pytest.skip("no committed local run records")
    results = tmp_path / "results"
    shutil.copytree(repo_results / "runs" / "local", results / "runs" / "local", symlinks=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "checkpoint", "wandb", "*.log"))
    shutil.copytree(repo_results / "tables", results / "tables")
    main(["tables", "--scale", "local", "--results", str(results)])
    for committed in sorted((repo_results / "tables" / "local").glob("*.*")):
        rebuilt = results / "tables" / "local" / committed.name
        assert rebuilt.read_bytes() == committed.read_bytes(), f"{committed.name} differs when rebuilt"


def test_table2_cells_are_the_median_over_seeds(tmp_path):
    """GLUE cells as the paper reports them: the median over seeds (± the seeds' std); the diff from the median."""
    res = tmp_path / "results"
    for seed, acc in enumerate((0.80, 0.82, 0.90)):
        make_run(res, "table2", f"lora_s{seed}", seed=seed, metrics={"eval_accuracy": acc})
    result = tables.table2(collect(res, SCALE), SCALE, out_dir=tmp_path / "out")
    c = cell(result, "RoB_base (LoRA)", "MNLI")
    assert c["ours"].startswith("82.0 ± 5.3 (n=3) median") and c["ours_median"] == pytest.approx(82.0)
    assert c["ours_mean"] == pytest.approx(84.0) and c["diff"] == pytest.approx(82.0 - 87.5)


def test_rank_scaling_table_has_a_row_per_scaling_rule_and_a_column_per_rank(tmp_path):
    """analysis/studies.py: alpha/r, alpha/sqrt(r) and LoRA+ rows, one column per r, mean accuracy over seeds; a
    variant at a rate other than alpha/r's is its own row ("own rate")."""
    from analysis.studies import rank_scaling

    res = tmp_path / "results"
    for scaling, ratio, lr in (("standard", 1.0, 4e-3), ("rs", 1.0, 4e-3), ("standard", 16.0, 4e-3),
                               ("rs", 1.0, 2e-3), ("standard", 16.0, 1e-3)):
        for r, acc in ((4, 0.50), (256, 0.40)):
            for seed in (0, 1):
                make_run(res, "rank_scaling", f"{scaling},{ratio},{lr},{r},{seed}", r=r, seed=seed,
                         train={"lr": lr}, metrics={"eval_accuracy": acc + 0.02 * seed + lr, "train_loss": 0.9},
                         method_extra={"scaling": scaling, "lr_ratio_b": ratio})
    result = rank_scaling(collect(res, SCALE), SCALE, out_dir=tmp_path / "out")
    cells = result.cells.set_index(["row", "column"])
    assert set(cells.index.get_level_values("row")) == {"alpha/r", "alpha/sqrt(r)", "alpha/r, LoRA+ (B x16)",
                                                        "alpha/sqrt(r), own rate", "alpha/r, LoRA+ (B x16), own rate"}
    assert cells.loc[("alpha/sqrt(r)", "r=256"), "ours_mean"] == pytest.approx(41.4)
    assert cells.loc[("alpha/sqrt(r), own rate", "r=256"), "ours_mean"] == pytest.approx(41.2)
    assert cells.loc[("alpha/r", "r=4"), "n_seeds"] == 2
    assert "| alpha/r | 0.004 | 51.4 (train loss 0.900, n=2) | 41.4 (train loss 0.900, n=2) |" in result.markdown


def test_grouped_batches_table_has_a_row_per_batching_and_a_column_per_method(tmp_path):
    """analysis/studies.py grouped_batches: random vs length-grouped batches, mean accuracy over seeds per method."""
    from analysis.studies import grouped_batches

    res = tmp_path / "results"
    for group, acc in ((0, 0.45), (50, 0.46)):
        for seed in (0, 1):
            make_run(res, "grouped_batches", f"{group},{seed}", seed=seed, train={"group_by_length": group},
                     metrics={"eval_accuracy": acc + 0.01 * seed})
    result = grouped_batches(collect(res, SCALE), SCALE, out_dir=tmp_path / "out")
    cells = result.cells.set_index(["row", "column"])
    assert cells.loc[("random", "lora"), "ours_mean"] == pytest.approx(45.5)
    assert cells.loc[("length-grouped (50 batches)", "lora"), "ours_mean"] == pytest.approx(46.5)
    assert cells.loc[("random", "lora"), "n_seeds"] == 2
