"""Every table `python -m analysis tables` builds, by name: the paper's, the learning-rate searches, the studies."""
from __future__ import annotations

from analysis.lr_search import LR_TABLE_FUNCTIONS
from analysis.studies import STUDY_TABLE_FUNCTIONS
from analysis.tables import PAPER_TABLE_FUNCTIONS

TABLE_FUNCTIONS = {**PAPER_TABLE_FUNCTIONS, **LR_TABLE_FUNCTIONS, **STUDY_TABLE_FUNCTIONS}
