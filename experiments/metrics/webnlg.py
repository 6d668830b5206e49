"""WebNLG / DART metrics as the WebNLG challenge 2020 GenerationEval script computes them (`eval.py -m
bleu,meteor,ter`), the evaluation the LoRA authors ran (`-nr 6`: six reference files, a missing reference written as
an empty line).

- BLEU: GenerationEval runs Moses' multi-bleu-detok.perl on the raw text: mteval-13a tokenisation, case-sensitive,
  closest reference length (padding references included, with length 0), no smoothing. That is sacrebleu's corpus
  BLEU with tokenize="13a", smooth_method="none". Returned x100 and unrounded (the Perl prints 2 decimals).
- METEOR: the METEOR 1.5 jar, `-l en -norm -r <n>`, on nltk.word_tokenize'd text. Returned as a fraction (.38).
- TER: per input, the minimum over its references of pyter's TER on the same tokens (an empty reference counts as
  1.0), averaged over inputs (not tercom's corpus TER). Returned as a fraction (.46).

References are padded with '' to `num_refs` per input (default: the largest count; references beyond num_refs are
dropped, as GenerationEval reads only num_refs files).
Deviation: GenerationEval reads its files with split('\\n'), so a trailing newline there adds one empty input; an
input list here has no such extra input.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from experiments.metrics import _java, ter
from experiments.metrics.io import clean

WEBNLG_METRICS = ("BLEU", "METEOR", "TER")
JAVA_FREE = ("BLEU", "TER")


# ------------------------------------------------------------------------------------------------ tokenisation
@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    """nltk's NLTKWordTokenizer with the rules of nltk 3.5, the version GenerationEval pins; later versions split
    en dashes, opening single quotes and a few contractions differently (0.3% of WebNLG references change)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer

    class WordTokenizer35(NLTKWordTokenizer):
        STARTING_QUOTES = [
            (re.compile("([«“‘„]|[`]+)", re.U), r" \1 "),
            (re.compile(r"^\""), r"``"),
            (re.compile(r"(``)"), r" \1 "),
            (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
            (re.compile(r"(?i)(\')(?!re|ve|ll|m|t|s|d)(\w)\b", re.U), r"\1 \2"),
        ]
        ENDING_QUOTES = [
            (re.compile("([»”’])", re.U), r" \1 "),
            (re.compile(r'"'), " '' "),
            (re.compile(r"(\S)(\'\')"), r"\1 \2 "),
            (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
            (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
        ]
        PUNCTUATION = [
            (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*)\s*$", re.U), r"\1 \2 \3 "),
            (re.compile(r"([:,])([^\d])"), r" \1 \2"),
            (re.compile(r"([:,])$"), r" \1 "),
            (re.compile(r"\.{2,}", re.U), r" \g<0> "),
            (re.compile(r"[;@#$%&]"), r" \g<0> "),
            (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
            (re.compile(r"[?!]"), r" \g<0> "),
            (re.compile(r"([^'])' "), r"\1 ' "),
            (re.compile(r"[*]", re.U), r" \g<0> "),
        ]
        CONTRACTIONS2 = [re.compile(p) for p in (
            r"(?i)\b(can)(?#X)(not)\b", r"(?i)\b(d)(?#X)('ye)\b", r"(?i)\b(gim)(?#X)(me)\b", r"(?i)\b(gon)(?#X)(na)\b",
            r"(?i)\b(got)(?#X)(ta)\b", r"(?i)\b(lem)(?#X)(me)\b", r"(?i)\b(mor)(?#X)('n)\b", r"(?i)\b(wan)(?#X)(na)\s")]

    return WordTokenizer35()


@functools.lru_cache(maxsize=1)
def _sentence_splitter():
    """nltk's pretrained English Punkt model (what word_tokenize uses); without its data, an untrained Punkt."""
    import nltk
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return functools.partial(nltk.sent_tokenize, language="english")
    except LookupError:
        warnings.warn("nltk's 'punkt_tab' data was not found: METEOR/TER tokenisation uses an untrained Punkt "
                      "sentence splitter, which can split differently from GenerationEval around abbreviations "
                      "('St.', 'D. C.'). For GenerationEval's exact tokens run `python -m nltk.downloader punkt_tab` "
                      "(or point NLTK_DATA at a copy).", stacklevel=3)
        from nltk.tokenize import PunktSentenceTokenizer
        return PunktSentenceTokenizer().tokenize


def word_tokenize(text: str) -> str:
    """' '.join(nltk.word_tokenize(text)) as GenerationEval (nltk 3.5) computes it."""
    tok = _word_tokenizer()
    return " ".join(t for sent in _sentence_splitter()(text) for t in tok.tokenize(sent))


# ------------------------------------------------------------------------------------------------ metrics
def pad_references(refs: Sequence[Sequence[str]], num_refs: int | None = None) -> list[list[str]]:
    n = num_refs or max(len(rs) for rs in refs)
    return [list(rs[:n]) + [""] * (n - len(rs[:n])) for rs in refs]


AUTHORS_REF_NUM = 6  # microsoft/LoRA examples/NLG: gpt2_decode.py --ref_num 6, eval.py -nr 6


def authors_text(text: str) -> str:
    """The authors' decode step for WebNLG / DART (gpt2_decode.py --lower --tokenize): lower case, every non-word
    character a token of its own, single spaces."""
    return " ".join(" ".join(re.split(r"(\W)", text.lower())).split())


def score_webnlg_as_authors(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> dict[str, float]:
    """BLEU and TER as the LoRA authors scored WebNLG and DART: hypotheses and references through `authors_text`,
    six reference files with a missing reference filled by the input's first (not left empty), then GenerationEval
    as in score_webnlg. Next to the official scores, not instead of them: lower-cased, pre-tokenised BLEU is higher."""
    n = AUTHORS_REF_NUM
    padded = [list(rs[:n]) + [rs[0]] * (n - len(rs[:n])) for rs in refs]
    return score_webnlg([[authors_text(r) for r in rs] for rs in padded], [authors_text(h) for h in hyps],
                        metrics=JAVA_FREE, num_refs=n)


def _bleu(refs: list[list[str]], hyps: list[str]) -> float:
    import sacrebleu
    streams = [list(col) for col in zip(*refs)]  # one stream per reference position
    return sacrebleu.corpus_bleu(hyps, streams, tokenize="13a", smooth_method="none", force=True).score


def _ter(refs_tok: list[list[str]], hyps_tok: list[str]) -> float:
    scores = [min(ter.sentence_ter(h.split(), r.split()) if r.split() else 1.0 for r in rs)
              for h, rs in zip(hyps_tok, refs_tok)]
    return sum(scores) / len(scores)


class _Meteor:
    """GenerationEval's METEOR call, `java -Xmx2G -jar meteor-1.5.jar HYP REF -l en -norm -r n` (REF: the n
    references of each input on consecutive lines). Started first, read last: the jar needs ~10 s to load."""

    def __init__(self, refs_tok: list[list[str]], hyps_tok: list[str]):
        self.tmp = Path(tempfile.mkdtemp(prefix="meteor-"))
        # one line per segment, each ended by "\n": a "\n".join would drop a trailing empty hypothesis/reference
        (self.tmp / "hypothesis").write_text("".join(h + "\n" for h in hyps_tok), encoding="utf-8")
        (self.tmp / "reference").write_text("".join(r + "\n" for rs in refs_tok for r in rs), encoding="utf-8")
        jar = _java.meteor_jar()
        self.proc = subprocess.Popen(
            [_java.java(), "-Xmx2G", "-jar", str(jar), str(self.tmp / "hypothesis"), str(self.tmp / "reference"),
             "-l", "en", "-norm", "-r", str(len(refs_tok[0]))],
            cwd=jar.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self) -> float:
        try:
            out, err = self.proc.communicate()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        found = re.search(r"Final score:\s*(\S+)", out.decode("utf-8", errors="replace"))
        if self.proc.returncode != 0 or not found:
            raise RuntimeError(f"METEOR failed ({self.proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        return float(found.group(1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def score_webnlg(refs: Sequence[Sequence[str]], hyps: Sequence[str], metrics: Iterable[str] = WEBNLG_METRICS,
                 num_refs: int | None = None) -> dict[str, float]:
    """BLEU (x100), METEOR and TER (fractions) of one output per input against that input's references.

    `metrics` picks a subset (BLEU and TER need no Java); `num_refs` is GenerationEval's -nr (default: the largest
    number of references of any input). Raises `MissingDependency` (with the fix) when METEOR is asked for and
    Java or pycocoevalcap's METEOR jar is missing.
    """
    wanted = set(metrics)
    unknown = wanted - set(WEBNLG_METRICS)
    if unknown:
        raise ValueError(f"unknown WebNLG metrics {sorted(unknown)}; choose from {WEBNLG_METRICS}")
    refs, hyps = clean(refs, hyps)
    refs = pad_references(refs, num_refs)
    if "METEOR" in wanted:
        _java.java(), _java.meteor_jar()
    out: dict[str, float] = {}
    meteor = None
    try:
        if wanted & {"METEOR", "TER"}:
            hyps_tok = [word_tokenize(h) for h in hyps]
            refs_tok = [[word_tokenize(r) for r in rs] for rs in refs]
            if "METEOR" in wanted:
                meteor = _Meteor(refs_tok, hyps_tok)
            if "TER" in wanted:
                out["TER"] = _ter(refs_tok, hyps_tok)
        if "BLEU" in wanted:
            out["BLEU"] = _bleu(refs, hyps)
        if meteor is not None:
            out["METEOR"] = meteor.result()
    finally:
        if meteor is not None:
            meteor.close()
    return {k: out[k] for k in WEBNLG_METRICS if k in out}
