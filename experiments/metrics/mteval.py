"""BLEU and NIST as the E2E challenge scorer computes them with `measure_scores.py -p`.

The LoRA authors ran `measure_scores.py e2e_ref.txt e2e_pred.txt -p` (microsoft/LoRA examples/NLG README): `-p`
selects e2e-metrics' Python port of mteval-v13a (`metrics/pymteval.py`) instead of the Perl script. This module
reimplements the port's logic: mteval's "basic" tokenisation, case-insensitive matching, n-gram counts clipped by
their largest count in any one reference, every reference of an input used as is (no padding).

Where the port and the Perl script (which e2e-metrics feeds with empty-padded reference sets) disagree, we follow
the port, since it produced the paper's numbers:
- NIST length penalty: the port's reference length is the sum over inputs of the MEAN reference length; the Perl
  script uses total reference words / the largest number of references of any input;
- an n-gram order without any match: the port floors the count at 1e-15, Perl halves a running constant;
- candidate lengths are not clipped at 0: an output shorter than n tokens adds a negative count to order n, and an
  empty output counts as one (empty) token.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

# mteval-v13a's "basic" (non-international) tokenisation, one substitution per line of the Perl script
_NORMALISE = [
    (re.compile(r"<skipped>"), ""),  # strip "skipped" tags
    (re.compile(r"-\n"), ""),  # strip end-of-line hyphenation and join lines
    (re.compile(r"\n"), " "),  # join lines
    (re.compile(r"&quot;"), '"'),  # SGML entities back to characters
    (re.compile(r"&amp;"), "&"),
    (re.compile(r"&lt;"), "<"),
    (re.compile(r"&gt;"), ">"),
]
_SPLIT = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # ASCII punctuation except ' , - . is a token
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
    (re.compile(r"\s+"), " "),
]

BLEU_MAX_N = 4
NIST_MAX_N = 5
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2  # length penalty 0.5 at a system/reference length ratio of 2/3
_TINY, _SMALL = 1e-15, 1e-9  # the port's floors for a zero hit count / a zero candidate length


def tokenize(sent: str) -> list[str]:
    """mteval-v13a tokens, lowercased (mteval's default: e2e-metrics passes no -c).

    As in the port, an empty sentence is one empty token ('' .split(' ') == ['']).
    """
    for pattern, repl in _NORMALISE:
        sent = pattern.sub(repl, sent)
    sent = f" {sent} "
    for pattern, repl in _SPLIT:
        sent = pattern.sub(repl, sent)
    return [tok.lower() for tok in sent.strip().split(" ")]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_hits(hyp: Sequence[str], refs: Sequence[Sequence[str]], n: int) -> Counter:
    """Hypothesis n-gram counts clipped by the largest count of the n-gram in any single reference."""
    ceiling: Counter = Counter()
    for ref in refs:
        for gram, cnt in _ngrams(ref, n).items():
            ceiling[gram] = max(ceiling[gram], cnt)
    return Counter({g: min(c, ceiling[g]) for g, c in _ngrams(hyp, n).items() if ceiling[g] > 0})


def corpus_bleu(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Corpus BLEU-4 in [0, 1]; brevity penalty from the reference closest in length (ties: the shorter one)."""
    hits = [0] * BLEU_MAX_N
    cand_lens = [0] * BLEU_MAX_N
    ref_len = 0
    for hyp_s, ref_ss in zip(hyps, refs):
        hyp, rs = tokenize(hyp_s), [tokenize(r) for r in ref_ss]
        for i in range(BLEU_MAX_N):
            hits[i] += sum(_clipped_hits(hyp, rs, i + 1).values())
            cand_lens[i] += len(hyp) - i
        ref_len += min((len(r) for r in rs), key=lambda length: (abs(length - len(hyp)), length))
    log_prec = sum(math.log(max(h, _TINY) / max(c, _SMALL)) for h, c in zip(hits, cand_lens)) / BLEU_MAX_N
    bp = 1.0
    if cand_lens[0] <= ref_len:
        bp = math.exp(1.0 - ref_len / (cand_lens[0] if cand_lens[0] else 1e-5))
    return bp * math.exp(log_prec)


def corpus_nist(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Corpus NIST-5: information-weighted clipped n-gram hits over candidate n-gram counts, summed over n, times
    the length penalty.

    Info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)), counts over ALL references of the corpus (the count of
    the empty prefix is the total number of reference words).
    """
    tok_refs = [[tokenize(r) for r in rs] for rs in refs]
    tok_hyps = [tokenize(h) for h in hyps]
    ref_counts: list[Counter] = [Counter() for _ in range(NIST_MAX_N + 1)]  # index n: n-gram counts; 0: ()
    for rs in tok_refs:
        for r in rs:
            ref_counts[0][()] += len(r)
            for n in range(1, NIST_MAX_N + 1):
                ref_counts[n].update(_ngrams(r, n))

    def info(gram: tuple) -> float:
        return math.log(ref_counts[len(gram) - 1][gram[:-1]] / ref_counts[len(gram)][gram], 2)

    hit_info = [0.0] * NIST_MAX_N
    cand_lens = [0] * NIST_MAX_N
    ref_len = 0.0  # sum over inputs of the mean reference length
    for hyp, rs in zip(tok_hyps, tok_refs):
        for n in range(1, NIST_MAX_N + 1):
            cand_lens[n - 1] += len(hyp) - (n - 1)
            hit_info[n - 1] += sum(info(g) * c for g, c in _clipped_hits(hyp, rs, n).items())
        ref_len += sum(len(r) for r in rs) / len(rs)
    score = sum(h / (c if c else 1) for h, c in zip(hit_info, cand_lens))  # c == 0 only for an empty corpus
    ratio = cand_lens[0] / ref_len if ref_len else 0.0
    if ratio >= 1:
        return score
    if ratio <= 0:
        return 0.0
    return score * math.exp(-NIST_BETA * math.log(ratio) ** 2)
