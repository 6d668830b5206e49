"""GLUE tasks (MNLI incl. MNLI-n, SST-2, MRPC, CoLA, RTE, STS-B, QNLI, QQP): load, label, score.

Labels follow GLUE / the HF `glue` dataset ids (MNLI: entailment 0, neutral 1, contradiction 2; RTE/QNLI:
entailment 0, not_entailment 1). Local files come from $LORA_DATA_DIR (glue_data layout, mnli/ folder); a missing
folder falls back to the hub's nyu-mll/glue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from experiments import data
from experiments.data import DataNotFound, Example

HUB = "nyu-mll/glue"
MNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2_LABELS = {"entailment": 0, "not_entailment": 1}
# offline MNLI train pairs (both from MNLI train, disjoint from dev; see mnli/SOURCE.txt)
MNLI_TRAIN_FILES = ("train_subsets/ppft_glue_pretrain/train.json", "train_subsets/ppft_glue_pretrain/dev.json")
MNLI_FULL_TRAIN = 392_702
EVAL_SUBSET_SEED = 0  # the fixed dev sample at capped scales is the same for every run


# --------------------------------------------------------------------------------------------- metrics
def accuracy(pred: list, gold: list) -> float:
    return sum(int(p == g) for p, g in zip(pred, gold)) / max(len(gold), 1)


def f1_binary(pred: list, gold: list, positive: int = 1) -> float:
    tp = sum(1 for p, g in zip(pred, gold) if p == positive and g == positive)
    fp = sum(1 for p, g in zip(pred, gold) if p == positive and g != positive)
    fn = sum(1 for p, g in zip(pred, gold) if p != positive and g == positive)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(pred: list, gold: list) -> float:
    """Binary Matthews correlation; 0 when a marginal is empty (sklearn's convention)."""
    tp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 1)
    tn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 0)
    fp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 1)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def ranks(x: list[float]) -> list[float]:
    """1-based ranks, ties get their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    out = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    return pearson(ranks(x), ranks(y))


def classification_metrics(pred: list, gold: list) -> dict[str, float]:
    return {"accuracy": accuracy(pred, gold)}


# --------------------------------------------------------------------------------------------- task specs
@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str  # under the data root
    hub_name: str
    a: str  # text column(s) in the local files
    b: Optional[str]
    label: str
    hub_a: str
    hub_b: Optional[str]
    num_labels: int  # 1 = regression
    labels: Optional[dict] = None  # label text -> id for local files; None: already numbers
    columns: Optional[list] = None  # header-less TSVs (CoLA)
    train: Optional[str] = "train.tsv"  # None: loaded elsewhere (MNLI: load_mnli_train)
    evals: dict = field(default_factory=lambda: {"eval": ("dev.tsv", "validation")})  # prefix -> (file, hub split)
    metrics: Callable[[list, list], dict] = classification_metrics

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


def _mrpc_metrics(pred, gold):
    return {"accuracy": accuracy(pred, gold), "f1": f1_binary(pred, gold)}


def _cola_metrics(pred, gold):
    return {"matthews_correlation": matthews(pred, gold), "accuracy": accuracy(pred, gold)}


def _stsb_metrics(pred, gold):
    return {"pearson": pearson(pred, gold), "spearmanr": spearman(pred, gold)}


TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("mnli", "mnli", "mnli", "premise", "hypothesis", "label", "premise", "hypothesis", 3,
             labels=MNLI_LABELS, train=None,  # handled by load_mnli_train (json subsets, or the hub for the full set)
             evals={"eval": ("dev_matched.jsonl", "validation_matched"),
                    "eval_mm": ("dev_mismatched.jsonl", "validation_mismatched")}),
    GlueTask("sst2", "glue/SST-2", "sst2", "sentence", None, "label", "sentence", None, 2),
    GlueTask("mrpc", "glue/MRPC", "mrpc", "#1 String", "#2 String", "Quality", "sentence1", "sentence2", 2,
             metrics=_mrpc_metrics),
    GlueTask("cola", "glue/CoLA", "cola", "sentence", None, "label", "sentence", None, 2,
             columns=["source", "label", "original_label", "sentence"], metrics=_cola_metrics),
    GlueTask("rte", "glue/RTE", "rte", "sentence1", "sentence2", "label", "sentence1", "sentence2", 2,
             labels=NLI2_LABELS),
    GlueTask("stsb", "glue/STS-B", "stsb", "sentence1", "sentence2", "score", "sentence1", "sentence2", 1,
             metrics=_stsb_metrics),
    # QNLI: only dev is offline, its train split comes from the hub (load_split falls back to it)
    GlueTask("qnli", "glue/QNLI", "qnli", "question", "sentence", "label", "question", "sentence", 2,
             labels=NLI2_LABELS),
    GlueTask("qqp", "glue/QQP", "qqp", "question1", "question2", "is_duplicate", "question1", "question2", 2,
             metrics=_mrpc_metrics),
]}


def label_set(task: GlueTask) -> str:
    """The labels a row of `task` may carry, as an error message lists them."""
    ids = list(range(task.num_labels))
    return f"an id or one of {list(task.labels)} (ids {ids})" if task.labels else f"one of the label ids {ids}"


def _converter(task: GlueTask) -> Callable[[object], float | int]:
    if task.regression:
        return float
    def convert(value):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, int):
            if not 0 <= value < task.num_labels:
                raise ValueError(f"{task.name}: label id {value} is out of range; expected {label_set(task)}")
            return value
        if task.labels is None or value not in task.labels:
            raise ValueError(f"{task.name}: unknown label {value!r}; expected {label_set(task)}")
        return task.labels[value]
    return convert


def _from_hub(task: GlueTask, split: str) -> list[Example]:
    rows = data.hub_split(HUB, task.hub_name, split)
    rows = [r for r in rows if r["label"] != -1]  # the hub's test splits are unlabelled (-1)
    return data.to_examples(rows, task.hub_a, task.hub_b, "label", float if task.regression else int)


def _missing(task: GlueTask, what: str, looked: str, hub_error: Exception) -> DataNotFound:
    return DataNotFound(f"{task.name} {what}: not in {looked} and {hub_error}. Provide the GLUE files there (set "
                        f"LORA_DATA_DIR to the folder holding {task.folder}/) or make the hub reachable.")


def _innermost(e: BaseException) -> str:
    """The root cause of a chain (datasets wraps the parser's error, which names the line, in its own)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _restore(task: GlueTask) -> str:
    """The way out when a local file of `task` holds no data."""
    return (f"re-download or restore it from the original {task.name} download (or point LORA_DATA_DIR at a folder "
            f"with a complete {task.folder}/), or delete it to load the hub copy {HUB}/{task.hub_name} instead")


def _read(task: GlueTask, path, file: str) -> list[dict]:
    try:
        if file.endswith(".jsonl"):
            return data.read_jsonl(path, restore=_restore(task))
        return data.read_tsv(path, task.columns, restore=_restore(task))
    except (OSError, data.EmptyDataFile):  # missing, unreadable (permissions), empty: their own messages say so
        raise
    except Exception as e:  # noqa: BLE001 - pandas/json/datasets errors: one message naming the file
        raise ValueError(f"{path} is malformed ({_innermost(e)}); fix or delete that line, or restore the file "
                         f"from the original {task.name} download") from e


def _brief(row: dict) -> str:
    """Every field of a row, long texts cut, so the broken field (often the last) stays in view."""
    cut = {k: v[:40] + "…" if isinstance(v, str) and len(v) > 40 else v for k, v in row.items()}
    return str(cut)


def _examples(task: GlueTask, rows: list[dict], where, a: str, b, label: str) -> list[Example]:
    """Rows -> examples; a row that does not convert is named by number and content."""
    convert = _converter(task)
    try:
        return data.to_examples(rows, a, b, label, convert)
    except (KeyError, ValueError, TypeError) as e:
        for i, row in enumerate(rows):  # the error path only: find the first bad row
            try:
                data.to_examples([row], a, b, label, convert)
            except (KeyError, ValueError, TypeError) as row_error:
                what = (f"no column {row_error}; its columns are {list(row)}" if isinstance(row_error, KeyError)
                        else str(row_error))
                raise ValueError(f"{where}, data row {i + 1}: {what}; the row reads {_brief(row)}. Fix or "
                                 "delete that line (a missing tab or a cut-off line?), or restore the file from the "
                                 f"original {task.name} download") from e
        raise


def load_split(task: GlueTask, file: str, hub: str) -> list[Example]:
    """One split: the local file if the task folder has it, else the hub."""
    folder = data.task_folder(task.folder)
    if folder is not None and (folder / file).is_file():
        path = folder / file
        return _examples(task, _read(task, path, file), path, task.a, task.b, task.label)
    try:
        return _from_hub(task, hub)
    except DataNotFound as e:
        raise _missing(task, f"split {file}", data.where_looked(task.folder, file), e) from e


def load_mnli_train() -> tuple[list[Example], str]:
    """Every MNLI train pair available offline (9,999) and where they came from; the hub's 392,702 if no folder."""
    folder = data.task_folder("mnli")
    if folder is not None and all((folder / f).is_file() for f in MNLI_TRAIN_FILES):
        examples = []
        for f in MNLI_TRAIN_FILES:
            try:
                rows = data.read_json_records(folder / f, restore=_restore(TASKS["mnli"]))
            except data.EmptyDataFile:
                raise
            except ValueError as e:  # json.JSONDecodeError names the line, not the file
                raise ValueError(f"{folder / f} is not valid JSON ({e}); restore it from the original MNLI "
                                 "download") from e
            examples += _examples(TASKS["mnli"], rows, folder / f, "text_a", "text_b", "label")
        return examples, "offline subsets"
    return load_mnli_train_hub(), "hub"


def load_mnli_train_hub() -> list[Example]:
    try:
        return _from_hub(TASKS["mnli"], "train")
    except DataNotFound as e:
        raise _missing(TASKS["mnli"], "train", data.where_looked("mnli", MNLI_TRAIN_FILES[0]), e) from e
