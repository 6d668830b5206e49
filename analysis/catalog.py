"""Every table `python -m analysis tables` builds, by name: the paper's, the learning-rate searches, the studies, the
subspace numbers of Figures 3 and 4."""
from __future__ import annotations

from analysis.lr_search import LR_TABLE_FUNCTIONS
from analysis.similarity import SIMILARITY_TABLE_FUNCTIONS
from analysis.studies import STUDY_TABLE_FUNCTIONS
from analysis.tables import PAPER_TABLE_FUNCTIONS

TABLE_FUNCTIONS = {**PAPER_TABLE_FUNCTIONS, **LR_TABLE_FUNCTIONS, **STUDY_TABLE_FUNCTIONS,
                   **SIMILARITY_TABLE_FUNCTIONS}
