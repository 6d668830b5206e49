"""Generation metrics computed the way the paper's official scorers compute them.

- E2E (`score_e2e`): BLEU, NIST, METEOR, ROUGE_L, CIDEr as tuetschek/e2e-metrics `measure_scores.py -p`;
- WebNLG and DART (`score_webnlg`): BLEU, METEOR, TER as WebNLG GenerationEval `eval.py`.

Modules: `mteval` (E2E BLEU/NIST), `coco` (E2E METEOR/ROUGE-L/CIDEr via the COCO caption code), `e2e`, `webnlg`,
`ter` (pyter's TER), `io` (file formats), `_java` (locating Java and pycocoevalcap's jars). Command line:
`python -m experiments.metrics {e2e,webnlg} --refs REFS --hyps HYPS`.
"""
from experiments.metrics._java import MissingDependency
from experiments.metrics.e2e import E2E_METRICS, score_e2e
from experiments.metrics.io import read_hyps, read_refs
from experiments.metrics.webnlg import WEBNLG_METRICS, score_webnlg

__all__ = ["score_e2e", "score_webnlg", "read_refs", "read_hyps", "MissingDependency", "E2E_METRICS",
           "WEBNLG_METRICS"]
