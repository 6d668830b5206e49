"""The paper's published numbers (Hu et al., 2021), typed in once from the paper's tables, as tidy records.

Every published number is a `PaperCell`: which table, row and column it sits in, the value (and ± where printed),
and how it maps to a run's config: method name and the method hyperparameters that identify it (r, targets, l_p,
l_i, adapter_r, top_k), the task (and MNLI-n), the metric, and the paper's model. `tables.py` finds our runs for a
cell with exactly that key, so a row of the paper and a run directory meet on config values, never on labels.

Units are the paper's, as printed: accuracies in %, Table 3's MET/ROUGE-L in %, Table 18's METEOR/ROUGE-L and
Table 14's MET/TER as fractions. `Column.unit` says which, and `collect.py` converts our metrics to it.

Hyperparameters the paper does not print (adapter widths, prefix lengths of Tables 2/3/14) are the configurations
that reproduce its parameter counts (see results/tables/params.md, built by experiments/param_table.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from paper.rows import ROWS

# The paper's models (conf/model names). A run on any other model (MiniLM, SmolLM2, tiny_*) is a stand-in: it can
# only fill rows marked `stand_in`, one row per paper configuration, so a small model never shows up twice.
PAPER_MODELS = ("roberta_base", "roberta_large", "deberta_v2_xxlarge", "gpt2_medium", "gpt2_large", "gpt3_175b")


@dataclass(frozen=True)
class Column:
    label: str  # as printed in the paper
    task: str  # our task name (see collect.TASK_ALIASES)
    metric: str  # canonical metric name (see collect.METRICS)
    unit: str = "percent"  # percent | fraction | raw: how the paper prints it; ours is converted to it
    decimals: int = 1  # the paper's precision; ours is printed with the same
    n: Optional[int] = None  # MNLI-n: training examples; None = the full training set
    needs_hub: bool = False  # the data cannot be had offline (WikiSQL): shown as "needs the hub" below paper scale
    split: Optional[str] = None  # a test-set part scored separately (WebNLG: U unseen, S seen, A all categories)


@dataclass(frozen=True)
class Row:
    label: str  # as printed, e.g. "LoRA r_q=r_v=8"
    method: str  # one of lora.config.METHODS
    hp: tuple[tuple[str, Any], ...] = ()  # method hyperparameters that identify the runs, e.g. (("r", 8),)
    model: str = "gpt3_175b"  # the paper's model (conf/model name)
    params: str = ""  # "# Trainable Parameters" as printed
    stand_in: bool = True  # a smaller model's runs may fill this row below paper scale
    task: Optional[str] = None  # set where the row, not the column, names the task (Table 6)
    needs_hub: bool = False  # with `task`: that task's data cannot be had offline
    key: Optional[str] = None  # the config row (paper/rows.py) whose runs fill this row, where one exists

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.hp)


@dataclass(frozen=True)
class PaperCell:
    table: str
    row: Row
    column: Column
    value: Optional[float]  # None: the paper prints no number here
    std: Optional[float] = None  # the paper's ± over seeds, where printed


@dataclass(frozen=True)
class PaperTable:
    name: str  # table15, table2, ...
    title: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    values: dict = field(default_factory=dict, hash=False, compare=False)  # (row label, column label) -> (v, std)
    note: str = ""
    # cell-specific hyperparameters (Table 16: the prefix length depends on MNLI-n): (row, column) -> hp
    cell_hp: dict = field(default_factory=dict, hash=False, compare=False)
    center: str = "mean"  # what a cell of ours shows over seeds: mean, or median (the paper's GLUE protocol)

    def cells(self) -> list[PaperCell]:
        out = []
        for row in self.rows:
            for col in self.columns:
                v, s = self.values.get((row.label, col.label), (None, None))
                out.append(PaperCell(self.name, row, col, v, s))
        return out

    def cell_hparams(self, row: Row, col: Column) -> dict[str, Any]:
        return row.hparams | dict(self.cell_hp.get((row.label, col.label), ()))

    @staticmethod
    def cell_task(row: Row, col: Column) -> tuple[str, bool]:
        """(task, needs_hub) of a cell: the row's where it names one, else the column's."""
        return (row.task, row.needs_hub) if row.task else (col.task, col.needs_hub)


# the method fields that tell one row's runs from another's (alpha and dropout are fixed per model in the paper)
IDENTIFYING = ("r", "targets", "l_p", "l_i", "adapter_r", "top_k")


def _row(label: str, key: str, extra: tuple[tuple[str, Any], ...] = (), **kw) -> Row:
    """A published row whose runs are the config row `key` (paper/rows.py), plus `extra` hyperparameters."""
    cfg = ROWS[key]
    hp = tuple((k, v) for k, v in cfg.hp if k in IDENTIFYING) + extra
    return Row(label, cfg.method, hp, key=key, **kw)


def _fill(rows: list[Row], columns: list[Column], numbers: list[list]) -> dict:
    """numbers[i][j] is a float, (mean, std), or None for row i, column j."""
    values = {}
    for row, line in zip(rows, numbers, strict=True):
        for col, v in zip(columns, line, strict=True):
            values[(row.label, col.label)] = (v if isinstance(v, tuple) else (v, None))
    return values


# ------------------------------------------------------------------------------------------- Table 15 (seed 002)
MNLI_M = Column("MNLI-m", "mnli", "accuracy")
WIKISQL = Column("WikiSQL", "wikisql", "accuracy", needs_hub=True)
_T15 = [  # (label, config row, params, WikiSQL, MNLI-m)
    ("Fine-Tune", "full", "175B", 73.8, 89.5),
    ("PrefixEmbed l_p=32, l_i=8", "pe_lp32_li8", "0.4M", 55.9, 84.9),
    ("PrefixEmbed l_p=64, l_i=8", "pe_lp64_li8", "0.9M", 58.7, 88.1),
    ("PrefixEmbed l_p=128, l_i=8", "pe_lp128_li8", "1.7M", 60.6, 88.0),
    ("PrefixEmbed l_p=256, l_i=8", "pe_lp256_li8", "3.2M", 63.1, 88.6),
    ("PrefixEmbed l_p=512, l_i=8", "pe_lp512_li8", "6.4M", 55.9, 85.8),
    ("PrefixLayer l_p=2, l_i=2", "pl_lp2_li2", "5.1M", 68.5, 89.2),
    ("PrefixLayer l_p=8, l_i=0", "pl_lp8_li0", "10.1M", 69.8, 88.2),
    ("PrefixLayer l_p=8, l_i=8", "pl_lp8_li8", "20.2M", 70.1, 89.5),
    ("PrefixLayer l_p=32, l_i=4", "pl_lp32_li4", "44.1M", 66.4, 89.6),
    ("PrefixLayer l_p=64, l_i=0", "pl_lp64_li0", "76.1M", 64.9, 87.9),
    ("Adapter^H r=1", "adapter_h_r1", "7.1M", 71.9, 89.8),
    ("Adapter^H r=4", "adapter_h_r4", "21.2M", 73.2, 91.0),
    ("Adapter^H r=8", "adapter_h_r8", "40.1M", 73.2, 91.5),
    ("Adapter^H r=16", "adapter_h_r16", "77.9M", 73.2, 91.5),
    ("Adapter^H r=64", "adapter_h_r64", "304.4M", 72.6, 91.5),
    ("LoRA r_v=2", "lora_v_r2", "4.7M", 73.4, 91.7),
    ("LoRA r_q=r_v=1", "lora_qv_r1", "4.7M", 73.4, 91.3),
    ("LoRA r_q=r_v=2", "lora_qv_r2", "9.4M", 73.3, 91.4),
    ("LoRA r_q=r_k=r_v=r_o=1", "lora_qkvo_r1", "9.4M", 74.1, 91.2),
    ("LoRA r_q=r_v=4", "lora_qv_r4", "18.8M", 73.7, 91.3),
    ("LoRA r_q=r_k=r_v=r_o=2", "lora_qkvo_r2", "18.8M", 73.7, 91.7),
    ("LoRA r_q=r_v=8", "lora_qv_r8", "37.7M", 73.8, 91.6),
    ("LoRA r_q=r_k=r_v=r_o=4", "lora_qkvo_r4", "37.7M", 74.0, 91.7),
    ("LoRA r_q=r_v=64", "lora_qv_r64", "301.9M", 73.6, 91.4),
    ("LoRA r_q=r_k=r_v=r_o=64", "lora_qkvo_r64", "603.8M", 73.9, 91.4),
    ("LoRA+PE r_q=r_v=8, l_p=8, l_i=4", "lora_pe_r8", "37.8M", 75.0, 91.4),
    ("LoRA+PE r_q=r_v=32, l_p=8, l_i=4", "lora_pe_r32", "151.1M", 75.9, 91.1),
    ("LoRA+PE r_q=r_v=64, l_p=8, l_i=4", "lora_pe_r64", "302.1M", 76.2, 91.3),
    ("LoRA+PL r_q=r_v=8, l_p=8, l_i=4", "lora_pl_r8", "52.8M", 72.9, 90.2),
]
_t15_rows = [_row(lab, key, params=p) for lab, key, p, *_ in _T15]
TABLE15 = PaperTable(
    "table15", "Table 15: hyperparameter analysis of adaptation methods on WikiSQL and MNLI-m (GPT-3 175B)",
    tuple(_t15_rows), (WIKISQL, MNLI_M),
    _fill(_t15_rows, [WIKISQL, MNLI_M], [[w, m] for *_, w, m in _T15]),
    note="Validation accuracy (%).")

# ------------------------------------------------------------------------------------------- Table 16 (seed 002)
# offline there are 9,999 MNLI train pairs: the 10k and full columns need the hub below paper scale
_MNLI_N = [Column("MNLI(m)-100", "mnli", "accuracy", n=100), Column("MNLI(m)-1k", "mnli", "accuracy", n=1000),
           Column("MNLI(m)-10k", "mnli", "accuracy", n=10000, needs_hub=True),
           Column("MNLI(m)-392K", "mnli", "accuracy", n=None, needs_hub=True)]
_t16_rows = [_row("GPT-3 (Fine-Tune)", "full"), Row("GPT-3 (PrefixEmbed)", "prefix_embed"),
             _row("GPT-3 (PrefixLayer)", "pl_lp8_li8"), _row("GPT-3 (LoRA)", "lora_qv_r8")]
# Table 17: PrefixEmbed's l_p grows with n (l_i = 8 throughout); the other methods keep their hyperparameters.
_T17_PE_LP = {100: 16, 1000: 32, 10000: 64, None: 256}
TABLE16 = PaperTable(
    "table16", "Table 16: validation accuracy on MNLI-n (n training examples) with GPT-3 175B",
    tuple(_t16_rows), tuple(_MNLI_N),
    _fill(_t16_rows, _MNLI_N, [[60.2, 85.8, 88.9, 89.5], [37.6, 75.2, 79.5, 88.6], [48.3, 82.5, 85.9, 89.6],
                               [63.8, 85.6, 89.2, 91.7]]),
    note="Validation accuracy (%) on the full MNLI-m validation set; hyperparameters as Table 17.",
    cell_hp={("GPT-3 (PrefixEmbed)", c.label): (("l_p", _T17_PE_LP[c.n]), ("l_i", 8)) for c in _MNLI_N})


# ------------------------------------------------------------------------------------------- Table 17 (seed 002)
@dataclass(frozen=True)
class Hyper:
    """One published training hyperparameter of Table 17: compared with the `config_key` of our Table 16 runs."""
    label: str  # e.g. "Batch Size"
    method: Optional[str]  # None: every method
    config_key: str  # flattened config column in collect's frame, e.g. "batch_size", "lr", "l_p"
    values: dict  # MNLI-n (None = full) -> the published value


_ALL_N = (100, 1000, 10000, None)


def _same(v) -> dict:
    return {n: v for n in _ALL_N}


TABLE17: tuple[Hyper, ...] = (
    Hyper("Optimizer", None, "optimizer", _same("AdamW")),
    Hyper("Warmup Tokens", None, "warmup_tokens", _same(250_000)),
    Hyper("LR Schedule", None, "lr_schedule", _same("Linear")),
    Hyper("Batch Size", None, "batch_size", dict(zip(_ALL_N, (20, 20, 100, 128)))),
    Hyper("# Epoch", None, "epochs", dict(zip(_ALL_N, (40, 40, 4, 2)))),
    Hyper("Learning Rate", "full", "lr", _same(5e-6)),
    Hyper("Learning Rate", "prefix_embed", "lr", dict(zip(_ALL_N, (2e-4, 2e-4, 4e-4, 5e-4)))),
    Hyper("Learning Rate", "prefix_layer", "lr", dict(zip(_ALL_N, (5e-5, 5e-5, 5e-5, 1e-4)))),
    Hyper("Learning Rate", "lora", "lr", _same(2e-4)),
    Hyper("PrefixEmbed l_p", "prefix_embed", "l_p", dict(_T17_PE_LP)),
    Hyper("PrefixEmbed l_i", "prefix_embed", "l_i", _same(8)),
    Hyper("PrefixTune l_p", "prefix_layer", "l_p", _same(8)),
    Hyper("PrefixTune l_i", "prefix_layer", "l_i", _same(8)),
    Hyper("LoRA r_q = r_v", "lora", "r", _same(8)),
)

# ------------------------------------------------------------------------------------ Table 5 / Table 6 (seed 003)
# Table 5 prints weight types as columns and datasets as rows; here each weight type is a row (it is the config).
_T5_COLS = [Column("WikiSQL (±0.5%)", "wikisql", "accuracy", needs_hub=True),
            Column("MultiNLI (±0.1%)", "mnli", "accuracy")]
_T5 = [("W_q, r=8", "lora_q_r8", 70.4, 91.0), ("W_k, r=8", "lora_k_r8", 70.0, 90.8),
       ("W_v, r=8", "lora_v_r8", 73.0, 91.0), ("W_o, r=8", "lora_o_r8", 73.2, 91.3),
       ("W_q, W_k, r=4", "lora_qk_r4", 71.4, 91.3), ("W_q, W_v, r=4", "lora_qv_r4", 73.7, 91.3),
       ("W_q, W_k, W_v, W_o, r=2", "lora_qkvo_r2", 73.7, 91.7)]
_t5_rows = [_row(lab, key, params="18M") for lab, key, *_ in _T5]
TABLE5 = PaperTable("table5", "Table 5: which weight matrices to adapt, at a budget of 18M trainable parameters "
                              "(GPT-3 175B)", tuple(_t5_rows), tuple(_T5_COLS),
                    _fill(_t5_rows, _T5_COLS, [[w, m] for *_, w, m in _T5]),
                    note="Validation accuracy (%).")

_T6_RANKS = (1, 2, 4, 8, 64)
_T6 = [("WikiSQL", "wikisql", True, "W_q", ("q",), [68.8, 69.6, 70.5, 70.4, 70.0]),
       ("WikiSQL", "wikisql", True, "W_q, W_v", ("q", "v"), [73.4, 73.3, 73.7, 73.8, 73.5]),
       ("WikiSQL", "wikisql", True, "W_q, W_k, W_v, W_o", ("q", "k", "v", "o"), [74.1, 73.7, 74.0, 74.0, 73.9]),
       ("MultiNLI", "mnli", False, "W_q", ("q",), [90.7, 90.9, 91.1, 90.7, 90.7]),
       ("MultiNLI", "mnli", False, "W_q, W_v", ("q", "v"), [91.3, 91.4, 91.3, 91.6, 91.4]),
       ("MultiNLI", "mnli", False, "W_q, W_k, W_v, W_o", ("q", "k", "v", "o"), [91.2, 91.7, 91.7, 91.5, 91.4])]
# Table 6's rows carry both the dataset and the weight types, its columns the rank: the task lives in the row, so
# every row gets its own column objects (the cell key is (row, column) with the row's task).
_t6_rows, _t6_cols, _t6_values, _t6_hp = [], [], {}, {}
for _ds, _task, _hub, _lab, _targets, _vals in _T6:
    _t6_row = Row(f"{_ds} {_lab}", "lora", (("targets", _targets),), task=_task, needs_hub=_hub)
    _t6_rows.append(_t6_row)
    for _r, _v in zip(_T6_RANKS, _vals):
        _t6_values[(_t6_row.label, f"r={_r}")] = (_v, None)
        _t6_hp[(_t6_row.label, f"r={_r}")] = (("r", _r),)
TABLE6 = PaperTable("table6", "Table 6: validation accuracy with different rank r (GPT-3 175B)", tuple(_t6_rows),
                    tuple(Column(f"r={r}", "", "accuracy") for r in _T6_RANKS), _t6_values,
                    note="Validation accuracy (%). The task of each cell is its row's (WikiSQL or MultiNLI).",
                    cell_hp=_t6_hp)

# ------------------------------------------------------------------------------------------- Table 18 (seed 004)
_T18_COLS = [Column("val_loss", "e2e", "val_loss", "raw", 2), Column("BLEU", "e2e", "BLEU", "percent", 2),
             Column("NIST", "e2e", "NIST", "raw", 4), Column("METEOR", "e2e", "METEOR", "fraction", 4),
             Column("ROUGE-L", "e2e", "ROUGE_L", "fraction", 4), Column("CIDEr", "e2e", "CIDEr", "raw", 4)]
_T18 = {1: [1.23, 68.72, 8.7215, 0.4565, 0.7052, 2.4329], 2: [1.21, 69.17, 8.7413, 0.4590, 0.7052, 2.4639],
        4: [1.18, 70.38, 8.8439, 0.4689, 0.7186, 2.5349], 8: [1.17, 69.57, 8.7457, 0.4636, 0.7196, 2.5196],
        16: [1.16, 69.61, 8.7483, 0.4629, 0.7177, 2.4985], 32: [1.16, 69.33, 8.7736, 0.4642, 0.7105, 2.5255],
        64: [1.16, 69.24, 8.7174, 0.4651, 0.7180, 2.5070], 128: [1.16, 68.73, 8.6718, 0.4628, 0.7127, 2.5030],
        256: [1.16, 68.92, 8.6982, 0.4629, 0.7128, 2.5012], 512: [1.16, 68.78, 8.6857, 0.4637, 0.7128, 2.5025],
        1024: [1.17, 69.37, 8.7495, 0.4659, 0.7149, 2.5090]}
_t18_rows = [_row(f"r={r}", "lora_qv_a32", (("r", r),), model="gpt2_medium") for r in _T18]
TABLE18 = PaperTable("table18", "Table 18: E2E NLG validation loss and test metrics with different rank r "
                                "(GPT-2 Medium, LoRA on W_q, W_v, 26,000 steps)", tuple(_t18_rows), tuple(_T18_COLS),
                     _fill(_t18_rows, _T18_COLS, list(_T18.values())))

# -------------------------------------------------------------------------------------- Table 3 (E2E, seed 003)
_T3_COLS = [Column("BLEU", "e2e", "BLEU", "percent", 1), Column("NIST", "e2e", "NIST", "raw", 2),
            Column("MET", "e2e", "METEOR", "percent", 1), Column("ROUGE-L", "e2e", "ROUGE_L", "percent", 1),
            Column("CIDEr", "e2e", "CIDEr", "raw", 2)]
_M, _L = "gpt2_medium", "gpt2_large"
_T3 = [  # (label, config row, model, params, stand_in, [BLEU, NIST, MET, ROUGE-L, CIDEr])
    ("GPT-2 M (FT)*", "full", _M, "354.92M", True, [68.2, 8.62, 46.2, 71.0, 2.47]),
    ("GPT-2 M (Adapter^L)* 0.37M", "adapter_l_r6", _M, "0.37M", True,
     [66.3, 8.41, 45.0, 69.8, 2.40]),
    ("GPT-2 M (Adapter^L)* 11.09M", "adapter_l_r224", _M, "11.09M", True,
     [68.9, 8.71, 46.1, 71.3, 2.47]),
    ("GPT-2 M (Adapter^H)", "adapter_h_r112", _M, "11.09M", True,
     [(67.3, .6), (8.50, .07), (46.0, .2), (70.7, .2), (2.44, .01)]),
    ("GPT-2 M (FT^Top2)*", "ft_top2", _M, "25.19M", True, [68.1, 8.59, 46.0, 70.8, 2.41]),
    ("GPT-2 M (PreLayer)*", "pl_lp14_li0", _M, "0.35M", True,
     [69.7, 8.81, 46.1, 71.4, 2.49]),
    ("GPT-2 M (LoRA)", "lora_qv_r4_a32", _M, "0.35M", True,
     [(70.4, .1), (8.85, .02), (46.8, .2), (71.8, .1), (2.53, .02)]),
    ("GPT-2 L (FT)*", "full", _L, "774.03M", False, [68.5, 8.78, 46.0, 69.9, 2.45]),
    ("GPT-2 L (Adapter^L) 0.88M", "adapter_l_r8", _L, "0.88M", False,
     [(69.1, .1), (8.68, .03), (46.3, .0), (71.4, .2), (2.49, .0)]),
    ("GPT-2 L (Adapter^L) 23.00M", "adapter_l_r248", _L, "23.00M", False,
     [(68.9, .3), (8.70, .04), (46.1, .1), (71.3, .2), (2.45, .02)]),
    ("GPT-2 L (PreLayer)*", "pl_lp17_li0", _L, "0.77M", False,
     [70.3, 8.85, 46.2, 71.7, 2.47]),
    ("GPT-2 L (LoRA)", "lora_qv_r4_a32", _L, "0.77M", False,
     [(70.4, .1), (8.89, .02), (46.8, .2), (72.0, .2), (2.47, .02)]),
]
_t3_rows = [_row(lab, key, model=mod, params=p, stand_in=s) for lab, key, mod, p, s, _ in _T3]
TABLE3 = PaperTable("table3", "Table 3: GPT-2 Medium/Large with different adaptation methods on the E2E NLG "
                              "Challenge", tuple(_t3_rows), tuple(_T3_COLS),
                    _fill(_t3_rows, _T3_COLS, [v for *_, v in _T3]),
                    note="* the paper's numbers from prior work. Below paper scale one decoder stands in for "
                         "GPT-2 M; GPT-2 L rows need GPT-2 Large.")

# ----------------------------------------------------------------------------------------- Table 14 (seed 002)
_T14_COLS = ([Column(f"BLEU {s}", "webnlg", "BLEU", "percent", 1, split=s) for s in "USA"]
             + [Column(f"MET {s}", "webnlg", "METEOR", "fraction", 2, split=s) for s in "USA"]
             + [Column(f"TER {s}", "webnlg", "TER", "fraction", 2, split=s) for s in "USA"])
_T14 = [  # (label, config row, model, params, stand_in, BLEU U S A, MET U S A, TER U S A)
    ("GPT-2 M Fine-Tune (354M)", "full", _M, "354M", True,
     [27.7, 64.2, 46.5, .30, .45, .38, .76, .33, .53]),
    ("GPT-2 M Adapter^L (0.37M)", "adapter_l_r6", _M, "0.37M", True,
     [45.1, 54.5, 50.2, .36, .39, .38, .46, .40, .43]),
    ("GPT-2 M Adapter^L (11M)", "adapter_l_r224", _M, "11M", True,
     [48.3, 60.4, 54.9, .38, .43, .41, .45, .35, .39]),
    ("GPT-2 M FT^Top2 (24M)", "ft_top2", _M, "24M", True,
     [18.9, 53.6, 36.0, .23, .38, .31, .99, .49, .72]),
    ("GPT-2 M Prefix (0.35M)", "pl_lp14_li0", _M, "0.35M", True,
     [45.6, 62.9, 55.1, .38, .44, .41, .49, .35, .40]),
    ("GPT-2 M LoRA (0.35M)", "lora_qv_r4_a32", _M, "0.35M", True,
     [(46.7, .4), (62.1, .2), (55.3, .2), .38, .44, .41, .46, .33, .39]),
    ("GPT-2 L Fine-Tune (774M)", "full", _L, "774M", False, [43.1, 65.3, 55.5, .38, .46, .42, .53, .33, .42]),
    ("GPT-2 L Adapter^L (0.88M)", "adapter_l_r8", _L, "0.88M", False,
     [(49.8, .0), (61.1, .0), (56.0, .0), .38, .43, .41, .44, .35, .39]),
    ("GPT-2 L Adapter^L (23M)", "adapter_l_r248", _L, "23M", False,
     [(49.2, .1), (64.7, .2), (57.7, .1), .39, .46, .43, .46, .33, .39]),
    ("GPT-2 L Prefix (0.77M)", "pl_lp17_li0", _L, "0.77M", False,
     [47.7, 63.4, 56.3, .39, .45, .42, .48, .34, .40]),
    ("GPT-2 L LoRA (0.77M)", "lora_qv_r4_a32", _L, "0.77M", False,
     [(48.4, .3), (64.0, .3), (57.0, .1), .39, .45, .42, .45, .32, .38]),
]
_t14_rows = [_row(lab, key, model=mod, params=p, stand_in=s) for lab, key, mod, p, s, _ in _T14]
TABLE14 = PaperTable("table14", "Table 14: GPT-2 with different adaptation methods on WebNLG (U: unseen, S: seen, "
                                "A: all categories)", tuple(_t14_rows), tuple(_T14_COLS),
                     _fill(_t14_rows, _T14_COLS, [v for *_, v in _T14]),
                     note="TER: lower is better. The paper: variances of MET and TER are below 0.01.")

# ------------------------------------------------------------------------------------------ Table 2 (seed 003)
_GLUE = [("MNLI", "mnli", "accuracy"), ("SST-2", "sst2", "accuracy"), ("MRPC", "mrpc", "accuracy"),
         ("CoLA", "cola", "matthews"), ("QNLI", "qnli", "accuracy"), ("QQP", "qqp", "accuracy"),
         ("RTE", "rte", "accuracy"), ("STS-B", "stsb", "pearson")]
# QNLI's train split and QQP are not in the offline data (only QNLI's dev split is)
_T2_COLS = ([Column(lab, task, metric, needs_hub=task in ("qnli", "qqp")) for lab, task, metric in _GLUE]
            + [Column("Avg.", "glue_avg", "average")])
_RB, _RL, _DX = "roberta_base", "roberta_large", "deberta_v2_xxlarge"
_T2 = [  # (label, config row, model, params, stand_in, 8 tasks + Avg.)
    ("RoB_base (FT)*", "full", _RB, "125.0M", True, [87.6, 94.8, 90.2, 63.6, 92.8, 91.9, 78.7, 91.2, 86.4]),
    ("RoB_base (BitFit)*", "bitfit", _RB, "0.1M", True, [84.7, 93.7, 92.7, 62.0, 91.8, 84.0, 81.5, 90.8, 85.2]),
    ("RoB_base (Adpt^D)* 0.3M", "adapter_d_r8", _RB, "0.3M", True,
     [(87.1, .0), (94.2, .1), (88.5, 1.1), (60.8, .4), (93.1, .1), (90.2, .0), (71.5, 2.7), (89.7, .3), 84.4]),
    ("RoB_base (Adpt^D)* 0.9M", "adapter_d_r24", _RB, "0.9M", True,
     [(87.3, .1), (94.7, .3), (88.4, .1), (62.6, .9), (93.0, .2), (90.6, .0), (75.9, 2.2), (90.3, .1), 85.4]),
    ("RoB_base (LoRA)", "lora_qv_r8", _RB, "0.3M", True,
     [(87.5, .3), (95.1, .2), (89.7, .7), (63.4, 1.2), (93.3, .3), (90.8, .1), (86.6, .7), (91.5, .2), 87.2]),
    ("RoB_large (FT)*", "full", _RL, "355.0M", False, [90.2, 96.4, 90.9, 68.0, 94.7, 92.2, 86.6, 92.4, 88.9]),
    ("RoB_large (LoRA)", "lora_qv_r8", _RL, "0.8M", False,
     [(90.6, .2), (96.2, .5), (90.9, 1.2), (68.2, 1.9), (94.9, .3), (91.6, .1), (87.4, 2.5), (92.6, .2), 89.0]),
    ("RoB_large (Adpt^P)† 3.0M", "adapter_p_r64", _RL, "3.0M", False,
     [(90.2, .3), (96.1, .3), (90.2, .7), (68.3, 1.0), (94.8, .2), (91.9, .1), (83.8, 2.9), (92.1, .7), 88.4]),
    ("RoB_large (Adpt^P)† 0.8M", "adapter_p_r16", _RL, "0.8M", False,
     [(90.5, .3), (96.6, .2), (89.7, 1.2), (67.8, 2.5), (94.8, .3), (91.7, .2), (80.1, 2.9), (91.9, .4), 87.9]),
    ("RoB_large (Adpt^H)† 6.0M", "adapter_h_r64", _RL, "6.0M", False,
     [(89.9, .5), (96.2, .3), (88.7, 2.9), (66.5, 4.4), (94.7, .2), (92.1, .1), (83.4, 1.1), (91.0, 1.7), 87.8]),
    ("RoB_large (Adpt^H)† 0.8M", "adapter_h_r8", _RL, "0.8M", False,
     [(90.3, .3), (96.3, .5), (87.7, 1.7), (66.3, 2.0), (94.7, .2), (91.5, .1), (72.9, 2.9), (91.5, .5), 86.4]),
    # † rows use the adapters' setup (sequence length 128, batch 32) but it is the same configuration for our runs:
    # stand_in=False so a stand-in model's LoRA runs fill RoB_base (LoRA) only, never twice.
    ("RoB_large (LoRA)†", "lora_qv_r8", _RL, "0.8M", False,
     [(90.6, .2), (96.2, .5), (90.2, 1.0), (68.2, 1.9), (94.8, .3), (91.6, .2), (85.2, 1.1), (92.3, .5), 88.6]),
    ("DeB_XXL (FT)*", "full", _DX, "1500.0M", False, [91.8, 97.2, 92.0, 72.0, 96.0, 92.7, 93.9, 92.9, 91.1]),
    ("DeB_XXL (LoRA)", "lora_qv_r16", _DX, "4.7M", False,  # r=16, not Table 10's 8: paper/recipes.py
     [(91.9, .2), (96.9, .2), (92.6, .6), (72.4, 1.1), (96.0, .1), (92.9, .1), (94.9, .4), (93.0, .2), 91.3]),
]
_t2_rows = [_row(lab, key, model=mod, params=p, stand_in=s) for lab, key, mod, p, s, _ in _T2]
TABLE2 = PaperTable("table2", "Table 2: RoBERTa base/large and DeBERTa XXL with different adaptation methods on "
                              "GLUE", tuple(_t2_rows), tuple(_T2_COLS),
                    _fill(_t2_rows, _T2_COLS, [v for *_, v in _T2]),
                    note="MNLI: matched accuracy; CoLA: Matthews correlation; STS-B: Pearson correlation; others: "
                         "accuracy (all ×100). Avg. is over the eight tasks, ours only where all eight ran. "
                         "* prior work, † the adapters' setup. Below paper scale one encoder stands in for "
                         "RoBERTa base. Ours: the median over seeds, as the paper reports (± the seeds' std).",
                    center="median")


# ------------------------------------------------------------------------------------------ Table 7 (seed 003)
@dataclass(frozen=True)
class DeltaVsW:
    """Table 7: ||UᵀW_qVᵀ||_F with U, V the top-r singular directions of ΔW_q, of W_q, or of a random matrix."""
    r: int
    delta: float  # U, V from ΔW_q
    w: float  # U, V from W_q itself
    random: float  # U, V from a random matrix
    norm_w: float  # ||W_q||_F
    norm_delta: float  # ||ΔW_q||_F

    @property
    def amplification(self) -> float:
        """H.4's feature amplification factor ||ΔW||_F / ||UᵀWVᵀ||_F (≈ 21.6 at r=4, ≈ 1.9 at r=64)."""
        return self.norm_delta / self.delta


# GPT-3 175B, W_q of one layer (the 48th of 96 per the paper's Section 7.3; seeds/ do not say which).
TABLE7 = (DeltaVsW(4, 0.32, 21.67, 0.02, 61.95, 6.91), DeltaVsW(64, 1.90, 37.71, 0.33, 61.95, 3.57))

TABLES: dict[str, PaperTable] = {t.name: t for t in (TABLE15, TABLE16, TABLE5, TABLE6, TABLE18, TABLE3, TABLE14,
                                                     TABLE2)}


def cells(name: str):
    """The table's published numbers as a tidy pandas frame (one row per cell)."""
    import pandas as pd  # local: paper.py itself needs nothing but the standard library

    t = TABLES[name]
    return pd.DataFrame([{"table": name, "row": c.row.label, "column": c.column.label, "method": c.row.method,
                          "hp": t.cell_hparams(c.row, c.column), "model": c.row.model,
                          "task": t.cell_task(c.row, c.column)[0],
                          "n": c.column.n, "metric": c.column.metric, "paper": c.value, "paper_std": c.std}
                         for c in t.cells()])
