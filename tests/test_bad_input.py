"""Bad input, one row each: the error names the problem and the way out, and nothing half-written stays behind
(a final.json with status failed and the error is the designed record of a failed run).

Cases run in this process (Hydra compose + experiments.train.run) except where Hydra itself reports at start-up.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import PY, REPO, SMOKE, compose


def with_overrides(base: list[str], extra: list[str]) -> list[str]:
    """`extra` replaces the entries of `base` with the same key (Hydra refuses two values for one group)."""
    keys = {o.split("=", 1)[0] for o in extra}
    return [o for o in base if o.split("=", 1)[0] not in keys] + list(extra)


def overrides(*extra: str) -> Callable:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        from experiments.train import run

        cfg = compose(with_overrides(SMOKE + [f"results_dir={tmp / 'results'}"], list(extra)))
        run(cfg, run_dir=tmp / "results" / "run")
    return case


def cli(*extra: str) -> Callable:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        proc = subprocess.run([str(PY), "-m", "experiments.train",
                               *with_overrides(SMOKE + [f"results_dir={tmp / 'results'}"], list(extra))],
                              cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0, proc.stdout[-2000:]
        raise RuntimeError(proc.stderr)
    return case


# ------------------------------------------------------------------------------------------- data cases
def no_data_anywhere(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """LORA_DATA_DIR is an empty folder and the hub is off: nothing to fall back on."""
    import datasets
    import huggingface_hub

    (tmp / "empty").mkdir()
    mp.setenv("LORA_DATA_DIR", str(tmp / "empty"))
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("HF_HUB_OFFLINE", "1")
    # read once at import: an earlier test may have imported them
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    overrides()(tmp, mp)


def broken_rte(edit: Callable[[str], str]) -> Callable:
    """task=rte on a copy of the real RTE files whose 5th data row is broken by `edit`."""
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        from experiments.data import task_folder

        src = task_folder("glue", "RTE")
        if src is None:
            pytest.skip("needs the GLUE RTE files (LORA_DATA_DIR)")
        dst = tmp / "data" / "glue" / "RTE"
        dst.mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            shutil.copy(src / name, dst / name)
        lines = (dst / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        lines[5] = edit(lines[5])
        (dst / "train.tsv").write_text("".join(lines), encoding="utf-8")
        mp.setenv("LORA_DATA_DIR", str(tmp / "data"))
        overrides("task=rte")(tmp, mp)
    return case


# ------------------------------------------------------------------------------------------- output cases
def read_only_results(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "ro").mkdir(mode=0o500)
    try:
        from experiments.train import run

        run(compose(SMOKE + [f"results_dir={tmp / 'ro'}"]), run_dir=tmp / "ro" / "runs" / "run")
    finally:
        (tmp / "ro").chmod(0o700)  # let pytest clean up


def results_under_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """Fails for root too (permissions do not stop root; a file in the path does)."""
    (tmp / "afile").write_text("not a folder\n")
    from experiments.train import run

    run(compose(SMOKE + [f"results_dir={tmp / 'afile'}"]), run_dir=tmp / "afile" / "runs" / "run")


# ------------------------------------------------------------------------------------------- adapter cases
def _tiny(family: str):
    import torch

    import lora
    from tests import tiny

    torch.manual_seed(0)
    model = tiny.FAMILIES[family]()
    lora.apply_method(model, lora.MethodConfig(name="lora", r=4, alpha=8))
    return model


def adapter_of_another_model(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from lora.io import load_adapter, save_adapter

    path = tmp / "in" / "adapter.safetensors"
    save_adapter(_tiny("llama"), path, metadata={"method": "lora", "model": "tiny_llama", "r": 4, "alpha": 8,
                                                  "task": "e2e"})
    load_adapter(_tiny("bert"), path)


def peft_export_of_another_model(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from lora.io import export_peft, load_adapter

    out = export_peft(_tiny("llama"), tmp / "in" / "peft", base_model_name_or_path="tiny_llama")
    load_adapter(_tiny("bert"), out / "adapter_model.safetensors")


# ------------------------------------------------------------------------------------------- the table
as_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")

CASES = [
    # unknown names: Hydra lists the options of the group; our own checks list the known values
    pytest.param(cli("method=foo"), r"Could not find 'method/foo'\s+Available options in 'method':(\s+\w+)*\s+lora\s",
                 id="unknown-method-cli"),
    pytest.param(overrides("method.name=foo"), r"unknown method 'foo'; known methods: full, ft_top, bitfit, .*lora_pl",
                 id="unknown-method-name"),
    pytest.param(overrides("model=foo"), r"Could not find 'model/foo'\s+Available options in 'model':.*tiny_bert",
                 id="unknown-model"),
    pytest.param(overrides("task=foo"), r"Could not find 'task/foo'\s+Available options in 'task':.*mnli_n",
                 id="unknown-task"),
    pytest.param(overrides("task.name=foo"), r"unknown task 'foo'; classification tasks: .*rte.*; generation tasks "
                 r"\(task.kind=generation\): e2e", id="unknown-task-name"),
    pytest.param(overrides("scale=huge"), r"Could not find 'scale/huge'\s+Available options in 'scale':.*smoke",
                 id="unknown-scale"),
    # method values
    pytest.param(overrides("method.r=0"), r"method\.r must be >= 1 for lora .*got 0; .*e\.g\. method\.r=8",
                 id="rank-zero"),
    pytest.param(overrides("method.alpha=0"), r"method\.alpha must be > 0 .*got 0\.0; e\.g\. method\.alpha=8",
                 id="alpha-zero"),
    pytest.param(overrides("method.alpha=-16"), r"method\.alpha must be > 0 .*got -16\.0; e\.g\. method\.alpha=8",
                 id="alpha-negative"),
    pytest.param(overrides("method.targets=[x]"), r"target role 'x' does not exist in a bert model; it has: q, k, v, "
                 r"o, mlp_in, mlp_out, mlp", id="target-role-the-model-lacks"),
    pytest.param(overrides("method=prefix_embed", "method.l_p=-1"), r"method\.l_p and method\.l_i must be >= 0 .*got "
                 r"l_p=-1, l_i=8; e\.g\. method\.l_p=8", id="prefix-length-negative"),
    pytest.param(overrides("train.group_by_length=-1"), r"train\.group_by_length must be >= 0 \(0: random batches",
                 id="group-by-length-negative"),
    # data
    pytest.param(overrides("task.n=10000"), r"n=10000 .*needs 10000 training pairs, but only \d+ are available "
                 r"\(offline subsets\); lower task\.n", id="mnli-n-larger-than-the-data"),
    pytest.param(no_data_anywhere, r"mnli train: not in \S+/empty/mnli/\S+ and the hub copy nyu-mll/glue/mnli "
                 r"\[train\] is not reachable .*set LORA_DATA_DIR to the folder holding mnli/\) or make the hub "
                 r"reachable",
                 id="no-data-folder-and-no-hub"),
    pytest.param(broken_rte(lambda line: line.split("\t")[0] + "\ta line cut short\n"),
                 r"RTE/train\.tsv, data row 5: rte: unknown label ''.*the row reads \{'index': 4, 'sentence1': 'a "
                 r"line cut short', 'sentence2': '', 'label': ''\}\. Fix or delete that line", id="data-row-cut-short"),
    pytest.param(broken_rte(lambda line: line.rstrip("\n") + "\tstray\tcolumns\n"),
                 r"RTE/train\.tsv is malformed \(ParserError: .*Expected 4 fields in line 6, saw 6\); fix or delete "
                 r"that line", id="data-row-extra-fields"),
    pytest.param(broken_rte(lambda line: line.rsplit("\t", 1)[0] + "\tmaybe\n"),
                 r"RTE/train\.tsv, data row 5: rte: unknown label 'maybe'; expected an id or one of \['entailment', "
                 r"'not_entailment'\]", id="data-row-unknown-label"),
    # types and places
    pytest.param(overrides("train.lr=abc"), r"train\.lr=abc.*Value 'abc' of type 'str' could not be converted to "
                 r"Float\s+full_key: train\.lr", id="override-of-the-wrong-type"),
    pytest.param(read_only_results, r"cannot create the run directory \S+ \(Permission denied.*point results_dir at a "
                 r"writable folder", id="results-dir-read-only", marks=as_root),
    pytest.param(results_under_a_file, r"cannot create the run directory \S+ \(Not a directory: \S+afile\S*\); point "
                 r"results_dir at a writable folder", id="results-dir-under-a-file"),
    pytest.param(cli("results_dir=/dev/null/results"), r"cannot create the results directory /dev/null/results \(Not a "
                 r"directory: \S+\); point results_dir at a writable folder", id="results-dir-under-a-file-cli"),
    # adapters
    pytest.param(adapter_of_another_model, r"adapter\.safetensors does not fit this model \(it was saved from "
                 r"model=tiny_llama, method=lora, r=4, alpha=8, task=e2e\): missing bert\..*; unexpected "
                 r"model\.layers\..*\. Load it into the model and method configuration", id="adapter-of-another-model"),
    pytest.param(peft_export_of_another_model, r"adapter_model\.safetensors does not fit this model \(it is a PEFT "
                 r"export, .*: load it with peft\.PeftModel\.from_pretrained on its base model",
                 id="peft-export-of-another-model"),
]


def message(e: BaseException) -> str:
    """The error and its causes, as a user sees them (Hydra prints the cause under its own line)."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("case, pattern", CASES)
def test_bad_input_fails_clearly_and_cleanly(case, pattern, env, tmp_path, monkeypatch):
    import re

    with pytest.raises(Exception) as info:
        case(tmp_path, monkeypatch)
    text = message(info.value)
    assert re.search(pattern, text, re.S), text

    # nothing half-written: no temp file, no checkpoint, no adapter; final.json only as the failed run's record
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "in" not in p.relative_to(tmp_path).parts[:1]]
    assert not [p for p in written if p.name.endswith(".tmp")]
    assert not [p for p in tmp_path.rglob("checkpoint")]
    assert not [p for p in written if p.name == "adapter.safetensors"]
    for final in [p for p in written if p.name == "final.json"]:
        record = json.loads(final.read_text())
        assert record["status"] == "failed" and re.search(pattern, record["error"], re.S), record


# ----------------------------------------------------------------------------------- data files: no data, labels
def glue_copy(task: str, folder: str, name: str, edit: Callable[[str], str]) -> Callable:
    """task=<task> on a copy of the real glue/<folder> train and dev files whose file `name` becomes edit(its text)."""
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        from experiments.data import task_folder

        src = task_folder("glue", folder)
        if src is None:
            pytest.skip(f"needs the GLUE {folder} files (LORA_DATA_DIR)")
        dst = tmp / "data" / "glue" / folder
        dst.mkdir(parents=True)
        for file in ("train.tsv", "dev.tsv"):
            shutil.copy(src / file, dst / file)
        (dst / name).write_text(edit((dst / name).read_text(encoding="utf-8")), encoding="utf-8")
        mp.setenv("LORA_DATA_DIR", str(tmp / "data"))
        overrides(f"task={task}")(tmp, mp)
    return case


def empty_e2e_train(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """A generation task's file: e2e/train.txt of 0 bytes (it used to load as 0 examples without a word)."""
    from experiments.tasks.generation import load_e2e_split

    (tmp / "data" / "e2e").mkdir(parents=True)
    (tmp / "data" / "e2e" / "train.txt").write_bytes(b"")
    mp.setenv("LORA_DATA_DIR", str(tmp / "data"))
    load_e2e_split("train")


def set_label(label: str, row: int = 5) -> Callable[[str], str]:
    """The text with the label (last field) of data row `row` replaced."""
    def edit(text: str) -> str:
        lines = text.splitlines(keepends=True)
        lines[row] = lines[row].rstrip("\n").rsplit("\t", 1)[0] + f"\t{label}\n"
        return "".join(lines)
    return edit


NOT_A_LINE = r"^(?!.*[Ff]ix or delete that line)"  # an empty file has no line to fix
RTE_WAY_OUT = (r"re-download or restore it from the original rte download \(or point LORA_DATA_DIR at a folder with a "
               r"complete glue/RTE/\), or delete it to load the hub copy nyu-mll/glue/rte instead")

DATA_FILE_CASES = [
    pytest.param(glue_copy("rte", "RTE", "train.tsv", lambda text: text.splitlines(keepends=True)[0]),
                 NOT_A_LINE + r".*RTE/train\.tsv has a header line but no data rows \(a truncated download or "
                 r"copy\?\); " + RTE_WAY_OUT, id="data-file-header-only"),
    pytest.param(glue_copy("rte", "RTE", "train.tsv", lambda text: ""),
                 NOT_A_LINE + r".*RTE/train\.tsv is empty \(0 bytes; a failed download or copy\?\); " + RTE_WAY_OUT,
                 id="data-file-empty"),
    pytest.param(glue_copy("rte", "RTE", "dev.tsv", lambda text: "\n  \n\t\n"),
                 NOT_A_LINE + r".*RTE/dev\.tsv is empty \(6 bytes, whitespace only; .*\); " + RTE_WAY_OUT,
                 id="data-file-whitespace-only"),
    pytest.param(empty_e2e_train, NOT_A_LINE + r".*e2e/train\.txt is empty \(0 bytes; .*\); re-download or restore "
                 r"it from the original E2E download .*hub copy e2e_nlg", id="data-file-empty-generation"),
    # a task whose files hold label ids: the message lists them (it listed [] before)
    pytest.param(glue_copy("sst2", "SST-2", "train.tsv", set_label("maybe")),
                 r"SST-2/train\.tsv, data row 5: sst2: unknown label 'maybe'; expected one of the label ids \[0, 1\]; "
                 r"the row reads .*Fix or delete that line", id="data-row-unknown-label-id-task"),
    pytest.param(glue_copy("sst2", "SST-2", "train.tsv", set_label("7")),
                 r"SST-2/train\.tsv, data row 5: sst2: label id 7 is out of range; expected one of the label ids "
                 r"\[0, 1\]", id="data-row-label-id-out-of-range"),
    pytest.param(glue_copy("rte", "RTE", "train.tsv", set_label("maybe")),
                 r"RTE/train\.tsv, data row 5: rte: unknown label 'maybe'; expected an id or one of \['entailment', "
                 r"'not_entailment'\] \(ids \[0, 1\]\)", id="data-row-unknown-label-names-the-ids"),
]


@pytest.mark.parametrize("case, pattern", DATA_FILE_CASES)
def test_bad_data_file_fails_clearly_and_cleanly(case, pattern, env, tmp_path, monkeypatch):
    test_bad_input_fails_clearly_and_cleanly(case, pattern, env, tmp_path, monkeypatch)


# ------------------------------------------------------------------------------------------- the metrics CLI's files
def metrics_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PY), "-m", "experiments.metrics", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_metrics_cli_counts_lines_as_wc_does(tmp_path):
    """U+2028, NEL and form feed inside a line do not end it (str.splitlines would); a CRLF file reads as LF; a last
    line without a newline counts: as many hypotheses as `wc -l` lines (+1 for that last line)."""
    from experiments.metrics import read_hyps, read_refs

    texts = ["the cat sat\u2028on the mat today", "the dog\x85barked at the postman", "a bird\x0csang in the old tree"]
    hyps, refs = tmp_path / "hyps.txt", tmp_path / "refs.txt"
    hyps.write_bytes("\n".join(texts).encode("utf-8"))  # no final newline: wc -l says 2
    refs.write_bytes("".join(t + "\r\n\r\n" for t in texts).encode("utf-8"))
    assert hyps.read_bytes().count(b"\n") + 1 == len(read_hyps(hyps)) == 3
    assert read_hyps(hyps)[0] == texts[0]
    assert read_refs(refs) == [[t] for t in texts]  # no "\r" left, no reference split in two
    proc = metrics_cli("webnlg", "--refs", str(refs), "--hyps", str(hyps), "--metrics", "BLEU,TER")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"BLEU": pytest.approx(100.0), "TER": 0.0}


def test_metrics_cli_names_a_file_that_is_not_utf8(tmp_path):
    import re

    first = "the café is open today\n".encode("utf-8")
    hyps, refs = tmp_path / "hyps.txt", tmp_path / "refs.txt"
    hyps.write_bytes(first + "the caf\xe9 is closed now\n".encode("latin-1"))
    refs.write_text("the café is open today\nthe café is closed now\n", encoding="utf-8")
    proc = metrics_cli("webnlg", "--refs", str(refs), "--hyps", str(hyps), "--metrics", "BLEU,TER")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    offset = len(first) + len(b"the caf")
    assert re.search(rf"error: {re.escape(str(hyps))} is not UTF-8 text: byte 0xe9 at byte offset {offset} \(line 2, "
                     r"byte 8 of that line\) .*re-encode the file as UTF-8", proc.stderr), proc.stderr
    # a missing file: its name, no traceback
    proc = metrics_cli("webnlg", "--refs", str(refs), "--hyps", str(tmp_path / "nope.txt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot read {tmp_path / 'nope.txt'} (No such file or directory)" in proc.stderr
