"""The benchmark harness runs end to end on tiny random models and writes every summary key (no assert on speed)."""
import json
import math
import subprocess
import sys

import pytest

from benchmarks.common import Settings, Swap, time_interleaved
from benchmarks.run import SUMMARY_KEYS
from tests import tiny
from tests.conftest import REPO

pytestmark = pytest.mark.integration  # whole processes (CLI, kills, launchers): not in the unit tier


def test_tiny_run_writes_every_summary_key(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--tiny", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        value = summary[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), key
    assert summary["tiny"] is True and summary["failed_jobs"] == []
    assert summary["versions"]["torch"] and summary["machine"]["logical_cores"]
    md = (out / "summary.md").read_text()
    assert "| machine | versions | settings |" in md and "ours_over_peft_step" in md
    # the paths being timed compute the same thing (correctness, not speed)
    mixed = json.loads((out / "raw" / "mixed.json").read_text())
    assert mixed["mixed_vs_sequential_max_rel_diff"] < 1e-4 and mixed["mixed_vs_peft_max_rel_diff"] < 1e-4
    # greedy decoding of the three paths (exact token equality is tests/test_multi.py's; here: the harness ran it)
    assert mixed["generate_mixed_vs_sequential_equal_tokens"] >= 0.9
    assert mixed["generate_mixed_vs_peft_equal_tokens"] >= 0.9
    assert set(mixed["generate"]) == {"mixed", "sequential", "peft"}
    latency = json.loads((out / "raw" / "latency.json").read_text())
    assert latency["merged_vs_unmerged_max_rel_diff"] < 1e-4
    assert {(c["batch"], c["seq"]) for c in latency["cells"]} == {(1, 8), (1, 32), (16, 8), (16, 32)}
    mem = json.loads((out / "raw" / "train_mem_decoder_lora.json").read_text())
    assert mem["peak_rss_mb"] >= mem["rss_after_build_mb"] > 0


def test_settings_overrides_are_typed_and_checked():
    s = Settings.for_mode(tiny=True).override(["repeats=5", "lat_seqs=4,8", "alpha=32", "targets=q,k,v"])
    assert (s.repeats, s.lat_seqs, s.alpha, s.targets, s.tiny) == (5, (4, 8), 32.0, ("q", "k", "v"), True)
    with pytest.raises(ValueError, match="name one of"):
        s.override(["nope=1"])


def test_swap_shares_the_base_and_restores_it():
    from lora.layers import LoRALinear, inject_lora

    model = tiny.llama().eval()
    q = model.model.layers[0].self_attn.q_proj
    swap = Swap(model)
    wrappers = swap.capture("lora", lambda m: inject_lora(m, ["q", "v"], r=2, alpha=2, dropout=0.0))
    assert model.model.layers[0].self_attn.q_proj is q  # restored after capture
    assert all(isinstance(w, LoRALinear) for w in wrappers.values())
    swap.install("lora")
    assert model.model.layers[0].self_attn.q_proj.base is q  # same base weights, no copy
    swap.install(None)
    assert model.model.layers[0].self_attn.q_proj is q


def test_interleaved_timing_calls_each_configuration_warmup_plus_repeats_times():
    calls = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3,
                             prepare={"a": lambda: calls.append("prep")})
    assert calls.count("a") == calls.count("b") == 4 and calls.count("prep") == 4
    assert [len(v) for v in times.values()] == [3, 3]
    assert calls[:5] == ["prep", "a", "b", "b", "prep"]  # odd rounds run in reverse order


@pytest.mark.data
def test_table_run_benchmark_times_every_phase_for_ours_and_peft(tmp_path, env):
    """benchmarks.table_runs on a smoke-scale Table 15 row: ours, ours with length-grouped batches and PEFT train
    through the same loop, every training phase gets time, the files are written (no assert on speed)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.table_runs", "--scale", "smoke", "--threads", "1",
                           "--rows", "table15:lora_qv_r8", "--impls", "ours,grouped,peft", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads((tmp_path / "table_runs.json").read_text())["runs"]
    assert [r["impl"] for r in runs] == ["ours", "grouped", "peft"]
    for r in runs:
        assert r["steps"] == 8 and r["examples_per_s"] > 0
        assert all(r["phases_s"][p] > 0 for p in ("data", "forward", "backward", "optimizer", "final evaluation"))
    assert runs[0]["trainable"] == runs[1]["trainable"] == runs[2]["trainable"]  # the same adapter and head
    page = (tmp_path / "table_runs.md").read_text()
    assert "ours / peft examples/s" in page and "grouped / ours examples/s" in page
