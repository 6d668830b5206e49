"""The E2E NLG Challenge metrics as the LoRA authors computed them: tuetschek/e2e-metrics
`measure_scores.py e2e_ref.txt e2e_pred.txt -p` (microsoft/LoRA examples/NLG README).

BLEU and NIST come from `mteval` (the scorer's Python port of mteval-v13a, `-p`), METEOR, ROUGE-L and CIDEr from
`coco` (COCOEvalCap). Returned on the paper's scale: BLEU, METEOR, ROUGE_L x100; NIST and CIDEr as they come
(measure_scores.py prints BLEU, METEOR and ROUGE_L as fractions).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from experiments.metrics import coco, mteval
from experiments.metrics.io import clean

E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
JAVA_FREE = ("BLEU", "NIST")


def score_e2e(refs: Sequence[Sequence[str]], hyps: Sequence[str],
              metrics: Iterable[str] = E2E_METRICS) -> dict[str, float]:
    """Score one output per input against that input's references (any number per input).

    `metrics` picks a subset; BLEU and NIST need no Java. Raises `MissingDependency` (with the fix) when METEOR,
    ROUGE_L or CIDEr is asked for and Java or pycocoevalcap's jars are missing.
    """
    wanted = set(metrics)
    unknown = wanted - set(E2E_METRICS)
    if unknown:
        raise ValueError(f"unknown E2E metrics {sorted(unknown)}; choose from {E2E_METRICS}")
    refs, hyps = clean(refs, hyps)
    if wanted & set(coco.COCO_METRICS):
        coco.require()
    meteor = coco.start_meteor() if "METEOR" in wanted else None  # loads while the rest is computed
    out: dict[str, float] = {}
    if "BLEU" in wanted:
        out["BLEU"] = 100.0 * mteval.corpus_bleu(refs, hyps)
    if "NIST" in wanted:
        out["NIST"] = mteval.corpus_nist(refs, hyps)
    if wanted & set(coco.COCO_METRICS):
        scores = coco.coco_scores(refs, hyps, [m for m in coco.COCO_METRICS if m in wanted], meteor=meteor)
        out.update({k: v if k == "CIDEr" else 100.0 * v for k, v in scores.items()})
    return {k: out[k] for k in E2E_METRICS if k in out}
