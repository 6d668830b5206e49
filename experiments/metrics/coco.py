"""METEOR, ROUGE-L and CIDEr as e2e-metrics computes them: the MS-COCO caption evaluation (COCOEvalCap).

COCOEvalCap runs the Stanford PTBTokenizer over all references, then over all outputs (lowercased, one sentence per
line, PTB punctuation tokens dropped), and hands the token strings to three scorers, which we take from the
`pycocoevalcap` package itself (the same COCO caption code e2e-metrics vendors):
- METEOR 1.5 (`-stdio -l en -norm`): statistics of each output against its best reference, summed over the corpus;
- ROUGE-L: per output, the best LCS precision and the best LCS recall over its references, F with beta = 1.2;
- CIDEr-D: tf-idf n-gram cosine (n <= 4, document frequencies from this corpus's references), clipped, with a
  Gaussian length penalty (sigma 6), times 10.
Only the tokenizer call is ours: pycocoevalcap's wrapper writes its temporary file into its own package folder.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from experiments.metrics import _java

COCO_METRICS = ("METEOR", "ROUGE_L", "CIDEr")
# removed after tokenisation, compared with the lowercased tokens (so PTB's -LRB-/-RRB- survive as -lrb-/-rrb-)
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer.tokenize on a list: one tokenizer run over all sentences, in order."""
    if not sentences:
        return []
    with tempfile.TemporaryDirectory(prefix="ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_text("\n".join(s.replace("\n", " ") for s in sentences), encoding="utf-8")
        proc = subprocess.run([_java.java(), "-cp", str(_java.ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer",
                               "-preserveLines", "-lowerCase", str(path)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[:len(sentences)]]


def require() -> None:
    """Fail early, with the fix in the message, when Java or pycocoevalcap's jars are missing."""
    _java.java(), _java.ptb_jar(), _java.meteor_jar()


def start_meteor():
    """pycocoevalcap's Meteor scorer; its JVM starts loading the paraphrase table (~10 s) as soon as it exists, so
    create it first and score with it last."""
    require()
    from pycocoevalcap.meteor.meteor import Meteor
    return Meteor()


def coco_scores(refs: Sequence[Sequence[str]], hyps: Sequence[str], metrics: Sequence[str] = COCO_METRICS,
                meteor=None) -> dict[str, float]:
    """METEOR, ROUGE_L (fractions) and CIDEr of raw outputs against raw references, as COCOEvalCap.evaluate.

    `meteor`: a scorer from `start_meteor()`, started earlier (else one is started here, when METEOR is asked for).
    """
    unknown = set(metrics) - set(COCO_METRICS)
    if unknown:
        raise ValueError(f"unknown COCO metrics {sorted(unknown)}; choose from {COCO_METRICS}")
    if "METEOR" in metrics and meteor is None:
        meteor = start_meteor()
    flat = ptb_tokenize([r for rs in refs for r in rs])
    hyp_tok = ptb_tokenize(hyps)
    gts, res, i = {}, {}, 0
    for k, rs in enumerate(refs):
        gts[k], res[k] = flat[i:i + len(rs)], [hyp_tok[k]]
        i += len(rs)
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    scorers = {"ROUGE_L": Rouge, "CIDEr": Cider, "METEOR": lambda: meteor}
    return {name: float(scorers[name]().compute_score(gts, res)[0]) for name in COCO_METRICS if name in metrics}
