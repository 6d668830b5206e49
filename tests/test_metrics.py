"""experiments.metrics against the official scorers' numbers.

tests/fixtures/metrics/expected.json holds what e2e-metrics (`measure_scores.py -p`) and WebNLG GenerationEval
(`eval.py -nr 3`) print for the fixture files (how they were run: its "_how"). Tests that need Java and
pycocoevalcap's jars (METEOR, PTB tokenizer) skip, saying so, where those are missing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from experiments.metrics import MissingDependency, __main__ as cli, _java, mteval, read_hyps, read_refs, score_e2e, \
    score_webnlg
from experiments.metrics.ter import sentence_ter
from experiments.metrics.webnlg import word_tokenize

FIX = Path(__file__).parent / "fixtures" / "metrics"
ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((FIX / "expected.json").read_text(encoding="utf-8"))
E2E = {k: v * (100 if k in ("BLEU", "METEOR", "ROUGE_L") else 1) for k, v in EXPECTED["e2e"].items()}
WEBNLG = EXPECTED["webnlg"]


def _java_ready() -> bool:
    try:
        _java.java(), _java.meteor_jar(), _java.ptb_jar()
    except MissingDependency:
        return False
    return True


needs_java = pytest.mark.skipif(not _java_ready(), reason="needs `java` on PATH and pycocoevalcap 1.2's jars "
                                "(METEOR 1.5, PTBTokenizer): apt-get install default-jre-headless; "
                                "pip install pycocoevalcap==1.2")


@pytest.fixture(scope="module")
def e2e():
    return read_refs(FIX / "e2e_refs.txt"), read_hyps(FIX / "e2e_hyps.txt")


@pytest.fixture(scope="module")
def webnlg():
    return read_refs(FIX / "webnlg_refs.txt"), read_hyps(FIX / "webnlg_hyps.txt")


@pytest.fixture(autouse=True)
def _quiet_punkt_fallback():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*punkt_tab.*")  # no nltk data offline: documented fallback
        yield


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.metrics", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


# ----------------------------------------------------------------------------------------------- reading, tokens
def test_reading(e2e, tmp_path):
    refs, hyps = e2e
    assert len(refs) == len(hyps) == 21 and [len(r) for r in refs][:5] == [2, 3, 2, 4, 1]
    assert hyps[16] == ""  # an empty output is an input too
    f = tmp_path / "r.txt"
    f.write_text("a\nb\n\n\nc\n\n", encoding="utf-8")
    assert read_refs(f) == [["a", "b"], ["c"]]


def test_mteval_tokenize():
    assert mteval.tokenize("The Eagle's price is £20-25, 3.5 stars &amp; more.") == \
        ["the", "eagle's", "price", "is", "£20", "-", "25", ",", "3.5", "stars", "&", "more", "."]
    assert mteval.tokenize("") == [""]  # as e2e-metrics' port: an empty output counts as one token


def test_word_tokenize_follows_nltk_35():
    # nltk 3.5 (GenerationEval's pin) output; nltk >= 3.8 splits the en dashes and the opening quote
    assert word_tokenize("Madrid–Barajas Airport serves the 2014–15 season of '1634: The Ram Rebellion'.") == \
        "Madrid–Barajas Airport serves the 2014–15 season of '1634 : The Ram Rebellion ' ."
    assert word_tokenize("It's a piece 'n bacon, more'n (\"ok\") cannot.") == \
        "It 's a piece ' n bacon , more ' n ( `` ok '' ) can not ."


def test_ter_is_pyters():
    # pyter's doctest: 4 edits (one of them a shift) over 13 reference words
    ref = "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times".split()
    hyp = "THIS WEEK THE SAUDIS denied information published in the new york times".split()
    assert sentence_ter(hyp, ref) == pytest.approx(4 / 13)
    assert sentence_ter([], ["a", "b"]) == 1.0 and sentence_ter(["a", "b"], ["a", "b"]) == 0.0


# ----------------------------------------------------------------------------------------------- official numbers
def test_e2e_bleu_nist_official(e2e):
    out = score_e2e(*e2e, metrics=["BLEU", "NIST"])
    assert list(out) == ["BLEU", "NIST"]
    assert out["BLEU"] == pytest.approx(E2E["BLEU"], abs=1e-9)
    assert out["NIST"] == pytest.approx(E2E["NIST"], abs=1e-9)


def test_webnlg_bleu_ter_official(webnlg):
    out = score_webnlg(*webnlg, metrics=["BLEU", "TER"], num_refs=WEBNLG["num_refs"])
    assert out["BLEU"] == pytest.approx(WEBNLG["BLEU"], abs=1e-8)  # the Perl printed 10 decimals
    assert out["TER"] == pytest.approx(WEBNLG["TER"], abs=1e-12)
    # padding: by default to the largest number of references (3 here), beyond it only the empty references move
    assert score_webnlg(*webnlg, metrics=["BLEU"])["BLEU"] == pytest.approx(WEBNLG["BLEU"], abs=1e-8)


@needs_java
def test_cli_e2e_official():
    proc = _cli("e2e", "--refs", str(FIX / "e2e_refs.txt"), "--hyps", str(FIX / "e2e_hyps.txt"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(out) == ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
    for key, value in E2E.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key


@needs_java
def test_webnlg_meteor_official(webnlg):
    out = score_webnlg(*webnlg, metrics=["METEOR"], num_refs=WEBNLG["num_refs"])
    assert out == {"METEOR": pytest.approx(WEBNLG["METEOR"], abs=1e-12)}


# ----------------------------------------------------------------------------------------------- errors, CLI
def test_identical_outputs_score_100(e2e):
    refs, _ = e2e
    hyps = [rs[0] for rs in refs]
    assert score_e2e(refs, hyps, metrics=["BLEU"])["BLEU"] == pytest.approx(100.0)
    out = score_webnlg(refs, hyps, metrics=["BLEU", "TER"])
    assert out["BLEU"] == pytest.approx(100.0) and out["TER"] == 0.0


def test_mismatch_and_bad_input(e2e):
    refs, hyps = e2e
    with pytest.raises(ValueError, match=r"hypotheses \(20\).*reference blocks \(21\)"):
        score_e2e(refs, hyps[:-1], metrics=["BLEU"])
    with pytest.raises(ValueError, match="without any reference"):
        score_webnlg([["a"], ["", " "]], ["a", "b"], metrics=["BLEU"])
    with pytest.raises(ValueError, match="unknown E2E metrics"):
        score_e2e(refs, hyps, metrics=["SPICE"])
    with pytest.raises(TypeError):
        score_e2e(["a ref", "another"], ["a", "b"])


def test_missing_java_or_jars_names_the_fix(e2e, monkeypatch):
    refs, hyps = e2e
    monkeypatch.setattr(_java.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependency, match="Install a Java runtime"):
        score_e2e(refs, hyps)
    with pytest.raises(MissingDependency, match="Install a Java runtime"):
        score_webnlg(refs, hyps, metrics=["METEOR"])
    assert set(score_e2e(refs, hyps, metrics=["BLEU", "NIST"])) == {"BLEU", "NIST"}  # no Java needed
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match=r"pip install pycocoevalcap==1\.2"):
        score_e2e(refs, hyps, metrics=["ROUGE_L"])


def test_cli_errors_and_single_reference_file(tmp_path, capsys):
    short = tmp_path / "hyps.txt"
    short.write_text("only one line\n", encoding="utf-8")
    assert cli.main(["e2e", "--refs", str(FIX / "e2e_refs.txt"), "--hyps", str(short)]) == 2
    assert "1 hypotheses" in capsys.readouterr().err
    # a reference file without empty lines holds one reference per input (e2e-metrics reads it so too)
    (tmp_path / "r.txt").write_text("the cat sat on the mat\na dog barked loudly today\n", encoding="utf-8")
    (tmp_path / "h.txt").write_text("the cat sat on the mat\na dog barked loudly today\n", encoding="utf-8")
    assert cli.main(["webnlg", "--refs", str(tmp_path / "r.txt"), "--hyps", str(tmp_path / "h.txt"),
                     "--metrics", "BLEU,TER"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"BLEU": pytest.approx(100.0), "TER": 0.0}


@needs_java
def test_webnlg_meteor_with_a_trailing_empty_prediction():
    """An empty last prediction (and padded, empty last references) must not shift METEOR's line count."""
    from experiments.metrics import score_webnlg

    refs = [["the cat sat on the mat", "a cat sat on a mat"], ["the dog barked"]]
    scores = score_webnlg(refs, ["the cat sat on the mat", ""])
    assert 0.0 < scores["METEOR"] < 1.0 and scores["BLEU"] > 0


def test_webnlg_scored_as_the_authors_lowercases_tokenises_and_fills_references_with_the_first():
    from experiments.metrics.webnlg import authors_text, score_webnlg, score_webnlg_as_authors

    assert authors_text("The Eagle's café, 5.5km  away!") == "the eagle ' s café , 5 . 5km away !"
    refs = [["The Eagle is a pub.", "A pub: The Eagle."], ["Alan Bean flew on Apollo 12."]]
    hyps = ["the eagle is a pub .", "alan bean flew on apollo 12 ."]
    ours = score_webnlg_as_authors(refs, hyps)
    assert ours["BLEU"] == pytest.approx(100.0)  # equal once both sides are lowered and tokenised
    assert score_webnlg(refs, hyps, metrics=("BLEU",))["BLEU"] < 100.0  # the official scorer is case-sensitive
    # a missing reference is the input's first again (six files), so an input with one reference scores like one
    # with that reference six times
    assert score_webnlg_as_authors([["a b c d"]], ["a b c d"]) == score_webnlg_as_authors([["a b c d"] * 6],
                                                                                           ["a b c d"])
