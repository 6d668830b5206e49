"""Data-to-text generation tasks (the paper's GPT-2 experiments): E2E NLG, WebNLG 2017 (U/S/A), DART.

Every task becomes (source, target) pairs: `source` is the linearised input, `target` one human reference.
- E2E: the LoRA/Prefix-Tuning files `e2e/{train,valid,test}.txt`, one line `MR||reference` (the MR already reads
  `name : X | Type : Y | ...`).
- WebNLG 2017: `webnlg2017/{train,dev,test}.json`; the modified triple set linearised as microsoft/LoRA's
  format_converting_webnlg.py does (`subj : prop : obj | ...`, only lexicalisations marked "good"). A test input is
  *seen* (S) when its category occurs in train, *unseen* (U) otherwise (the 5 categories Athlete, Artist,
  MeanOfTransportation, CelestialBody, Politician); A is all of them.
- DART v1.1.1: `dart/dart-v1.1.1-full-{train,dev,test}.json` (`subj : prop : obj | ...`, the property lower-cased as
  in format_converting_dart.py). Offline only the dev file exists: with `scale.generation.dart_dev_split` it is split
  into train/val/test by triple set (a triple set never straddles two parts) with `task.split_seed`.

Evaluation groups every reference of one source together (multi-reference scoring, as the official E2E and
GenerationEval scripts do): `group_references` keeps the order in which sources first appear.
"""
from __future__ import annotations

import inspect
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from experiments import data
from experiments.data import DataNotFound

# microsoft/LoRA's list; load_webnlg checks it against the categories that actually occur in train
WEBNLG_SEEN = ("Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam",
               "University", "WrittenWork")
WEBNLG_UNSEEN = ("Athlete", "Artist", "MeanOfTransportation", "CelestialBody", "Politician")
DART_FILE = "dart-v1.1.1-full-{split}.json"
EVAL_SUBSET_SEED = 0  # the fixed subset of test inputs at capped scales is the same for every run
# metric families (experiments.metrics) and the subsets each task reports
METRIC_KIND = {"e2e": "e2e", "webnlg": "webnlg", "dart": "webnlg"}
SUBSETS = {"webnlg": {"A": None, "S": "seen", "U": "unseen"}}  # prefix -> subset tag (None = every input)
TASKS = tuple(METRIC_KIND)


@dataclass(frozen=True)
class GenExample:
    source: str  # the linearised input (E2E MR, triples)
    target: str  # one human reference
    subset: str = ""  # WebNLG: "seen" | "unseen"; empty elsewhere


@dataclass
class GenInput:
    source: str
    refs: list[str]  # every reference of this source, in file order
    subset: str = ""


@dataclass
class GenTaskData:
    name: str
    train: list[GenExample]
    val: list[GenExample]  # val_loss is computed on it (the task's validation split)
    evals: dict[str, list[GenInput]]  # "eval" -> the grouped test inputs we generate for
    metric_kind: str  # e2e | webnlg (experiments.metrics)
    subsets: dict[str, Optional[str]] = field(default_factory=dict)  # WebNLG: A/S/U
    deviations: list[str] = field(default_factory=list)
    source: str = ""
    kind: str = "generation"
    num_labels: int = 0  # no classification head

    @property
    def regression(self) -> bool:
        return False


# --------------------------------------------------------------------------------------------- grouping
def group_references(examples: Sequence[GenExample]) -> list[GenInput]:
    """One GenInput per distinct source (first-appearance order) holding all its references."""
    groups: dict[str, GenInput] = {}
    for ex in examples:
        g = groups.get(ex.source)
        if g is None:
            groups[ex.source] = GenInput(ex.source, [ex.target], ex.subset)
        else:
            if g.subset != ex.subset:
                raise ValueError(f"source {ex.source[:80]!r} appears in two subsets ({g.subset!r}, {ex.subset!r})")
            g.refs.append(ex.target)
    return list(groups.values())


def linearise(triples: Sequence[Sequence[str]], lower_property: bool = False) -> str:
    """[(s, p, o), ...] -> 's : p : o | s2 : p2 : o2' (microsoft/LoRA's format_converting_{webnlg,dart}.py)."""
    return " | ".join(f"{s} : {p.lower() if lower_property else p} : {o}" for s, p, o in triples)


# --------------------------------------------------------------------------------------------- E2E
def read_e2e(path: Path) -> list[GenExample]:
    """`MR||reference` lines (LoRA/Prefix-Tuning format); the reference is stripped of its trailing space."""
    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    data.check_not_empty(path, restore="re-download or restore it from the original E2E download (the LoRA-format "
                         "files), or delete it to load the hub copy e2e_nlg instead")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if "||" not in line:
                raise ValueError(f"{path}:{n}: expected 'MR||reference', got {line[:80]!r}")
            mr, ref = line.split("||", 1)
            out.append(GenExample(mr.strip(), ref.strip()))
    return out


# official E2E csv / hub attribute names -> the LoRA file spelling (e2e/SOURCE.txt)
E2E_ATTRS = {"eatType": "Type", "priceRange": "price", "customer rating": "customer rating",
             "familyFriendly": "family friendly"}


def e2e_mr_from_official(mr: str) -> str:
    """'name[The Vaults], eatType[pub]' -> 'name : The Vaults | Type : pub' (the LoRA files' MR format)."""
    parts = []
    for item in mr.split("],"):
        item = item.strip().rstrip("]")
        if not item:
            continue
        key, _, value = item.partition("[")
        key = key.strip()
        parts.append(f"{E2E_ATTRS.get(key, key)} : {value.strip()}")
    return " | ".join(parts)


def load_e2e_split(split: str) -> tuple[list[GenExample], str]:
    """split: train | valid | test. The local file, else the hub's e2e_nlg (MRs converted to the file format)."""
    folder = data.task_folder("e2e")
    if folder is not None and (folder / f"{split}.txt").is_file():
        return read_e2e(folder / f"{split}.txt"), "local"
    hub_split = {"train": "train", "valid": "validation", "test": "test"}[split]
    try:
        rows = data.hub_split("e2e_nlg", None, hub_split)
    except DataNotFound as e:
        raise DataNotFound(f"E2E {split}: not in {data.where_looked('e2e', split + '.txt')} and {e}. Provide the "
                           "LoRA-format files there (LORA_DATA_DIR) or make the hub reachable.") from e
    return [GenExample(e2e_mr_from_official(r["meaning_representation"]), r["human_reference"].strip())
            for r in rows], "hub"


# --------------------------------------------------------------------------------------------- WebNLG
def webnlg_entries(path: Path) -> list[dict]:
    """The `entries` of a WebNLG challenge JSON as a list of entry dicts, in file order (keys "1", "2", ...)."""
    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    data.check_not_empty(path, restore="re-download or restore it from the original WebNLG 2017 download (the LoRA "
                         "JSON files)")
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)["entries"]
    return [next(iter(e.values())) for e in entries]


def webnlg_examples(entries: list[dict], seen: Optional[set[str]] = None) -> list[GenExample]:
    """One example per 'good' lexicalisation; subset seen/unseen by category when `seen` is given."""
    out = []
    for e in entries:
        source = linearise([(t["subject"], t["property"], t["object"]) for t in e["modifiedtripleset"]])
        subset = "" if seen is None else ("seen" if e["category"] in seen else "unseen")
        for lex in e["lexicalisations"]:
            if lex.get("comment", "good") == "good":
                out.append(GenExample(source, lex["lex"].strip(), subset))
    return out


def load_webnlg() -> tuple[list[GenExample], list[GenExample], list[GenExample], set[str]]:
    """(train, dev, test, seen categories); test examples carry subset seen/unseen."""
    folder = data.task_folder("webnlg2017")
    files = ("train.json", "dev.json", "test.json")
    if folder is None or not all((folder / f).is_file() for f in files):
        raise DataNotFound(f"WebNLG 2017: {', '.join(files)} not all in {data.where_looked('webnlg2017')}; provide "
                           "the LoRA JSON files there (LORA_DATA_DIR). The hub's web_nlg uses another layout and is "
                           "not read by this runner.")
    train_e, dev_e, test_e = (webnlg_entries(folder / f) for f in files)
    seen = {e["category"] for e in train_e}
    return webnlg_examples(train_e), webnlg_examples(dev_e), webnlg_examples(test_e, seen), seen


# --------------------------------------------------------------------------------------------- DART
def dart_examples(entries: list[dict]) -> list[GenExample]:
    """DART entries (local json, or hub rows whose annotations are a dict of lists) -> examples."""
    out = []
    for e in entries:
        source = linearise(e["tripleset"], lower_property=True)
        ann = e["annotations"]
        texts = ann["text"] if isinstance(ann, dict) else [a["text"] for a in ann]
        out.extend(GenExample(source, t.strip()) for t in texts)
    return out


def read_dart(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataNotFound(f"{path} not found")
    data.check_not_empty(path, restore="re-download or restore it from the original DART v1.1.1 download")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def split_by_source(examples: Sequence[GenExample], fractions: Sequence[float], seed: int) -> list[list[GenExample]]:
    """Partition examples by their source (triple set): shuffle the distinct sources with `seed`, cut them by
    `fractions` (the last part takes the rest), keep each part's examples in file order. Deterministic."""
    sources = sorted({e.source for e in examples})
    random.Random(seed).shuffle(sources)
    part_of, start = {}, 0
    for k, frac in enumerate(fractions):
        n = len(sources) - start if k == len(fractions) - 1 else round(frac * len(sources))
        for s in sources[start:start + n]:
            part_of[s] = k
        start += n
    parts: list[list[GenExample]] = [[] for _ in fractions]
    for e in examples:
        parts[part_of[e.source]].append(e)
    return parts


def load_dart(task_cfg, dev_split: bool) -> tuple[list[GenExample], list[GenExample], list[GenExample], str, list[str]]:
    """(train, val, test, source, deviations). dev_split: carve all three out of the dev file by triple set."""
    folder = data.task_folder("dart")
    if dev_split:
        path = folder / DART_FILE.format(split="dev") if folder is not None else None
        if path is None or not path.is_file():
            raise DataNotFound(f"DART dev: {data.where_looked('dart', DART_FILE.format(split='dev'))} not found")
        examples = dart_examples(read_dart(path))
        test_f, val_f = task_cfg.test_fraction, task_cfg.val_fraction
        train, val, test = split_by_source(examples, [1 - test_f - val_f, val_f, test_f], task_cfg.split_seed)
        n_src = len({e.source for e in examples})
        dev = [f"dart: only the dev file (2,768 triple sets) is available offline; it was split by triple set "
               f"(seed {task_cfg.split_seed}) into train/val/test = {1 - test_f - val_f:.0%}/{val_f:.0%}/{test_f:.0%} "
               f"of its {n_src} distinct triple sets; the paper trains on DART train (62,659 texts) and tests on "
               "DART test"]
        return train, val, test, "local dev split", dev
    parts, source = {}, "local"
    for split, hub in (("train", "train"), ("dev", "validation"), ("test", "test")):
        path = folder / DART_FILE.format(split=split) if folder is not None else None
        if path is not None and path.is_file():
            parts[split] = dart_examples(read_dart(path))
            continue
        try:
            parts[split] = dart_examples(data.hub_split(task_cfg.hub_id or "Yale-LILY/dart", None, hub))
            source = "hub"
        except DataNotFound as e:
            raise DataNotFound(f"DART {split}: not in {data.where_looked('dart', DART_FILE.format(split=split))} "
                               f"and {e}. Offline only the dev file exists: use a scale with "
                               "generation.dart_dev_split=true (local, smoke), or make the hub reachable.") from e
    return parts["train"], parts["dev"], parts["test"], source, []


# --------------------------------------------------------------------------------------------- the task
def stratified_inputs(inputs: list[GenInput], n: int, seed: int) -> list[GenInput]:
    """A fixed sample of n inputs, each subset represented in proportion (WebNLG seen/unseen), original order kept."""
    if n >= len(inputs):
        return inputs
    by_subset: dict[str, list[int]] = {}
    for i, g in enumerate(inputs):
        by_subset.setdefault(g.subset, []).append(i)
    rng, keep, left = random.Random(seed), [], n
    tags = sorted(by_subset)
    for k, tag in enumerate(tags):
        idx = by_subset[tag]
        take = left if k == len(tags) - 1 else min(len(idx), round(n * len(idx) / len(inputs)))
        keep += rng.sample(idx, min(take, len(idx)))
        left -= min(take, len(idx))
    return [inputs[i] for i in sorted(keep)]


def load(task_cfg, scale_cfg) -> GenTaskData:
    name = task_cfg.name
    if name not in METRIC_KIND:
        raise ValueError(f"unknown generation task {name!r}; known: {', '.join(TASKS)}")
    gen_scale = scale_cfg.generation
    deviations: list[str] = []
    if name == "e2e":
        train, source = load_e2e_split("train")
        val, _ = load_e2e_split("valid")
        test, _ = load_e2e_split("test")
    elif name == "webnlg":
        train, val, test, seen = load_webnlg()
        if seen != set(WEBNLG_SEEN):
            deviations.append(f"webnlg: the categories in train ({sorted(seen)}) differ from the 10 seen ones of "
                              "the official split")
        source = "local"
    else:
        train, val, test, source, deviations = load_dart(task_cfg, gen_scale.dart_dev_split)

    max_train = scale_cfg.max_train_examples
    if max_train is not None and len(train) > max_train:
        deviations.append(f"{name}: trained on a fixed sample (data_seed {task_cfg.data_seed}) of {max_train} of the "
                          f"{len(train)} training texts (scale cap)")
        train = data.cap(train, max_train, task_cfg.data_seed)
    val_cap = _min_cap(scale_cfg.max_eval_examples, gen_scale.max_val_examples)
    if val_cap is not None and len(val) > val_cap:
        deviations.append(f"{name}: val_loss on a fixed sample (seed {EVAL_SUBSET_SEED}) of {val_cap} of the "
                          f"{len(val)} validation texts")
        val = data.cap(val, val_cap, EVAL_SUBSET_SEED)
    inputs = group_references(test)
    if gen_scale.max_inputs is not None and len(inputs) > gen_scale.max_inputs:
        deviations.append(f"{name}: generated for a fixed sample (seed {EVAL_SUBSET_SEED}) of {gen_scale.max_inputs} "
                          f"of the {len(inputs)} test inputs, all references of each (scale cap)")
        inputs = stratified_inputs(inputs, gen_scale.max_inputs, EVAL_SUBSET_SEED)
    return GenTaskData(name, train, val, {"eval": inputs}, METRIC_KIND[name], dict(SUBSETS.get(name, {})),
                       deviations, source)


def _min_cap(*caps: Optional[int]) -> Optional[int]:
    given = [c for c in caps if c is not None]
    return min(given) if given else None


# --------------------------------------------------------------------------------------------- scoring
JAVA_FREE = {"e2e": ("BLEU", "NIST"), "webnlg": ("BLEU", "TER")}  # what the scorers compute without java


def _is_missing_dependency(err: BaseException) -> bool:
    """Java or pycocoevalcap absent: the metrics module's MissingDependency, an ImportError, java not found."""
    if type(err).__name__ == "MissingDependency" or isinstance(err, ImportError):
        return True
    return isinstance(err, FileNotFoundError) and "java" in str(err).lower()


def _as_authors(kind: str, refs: list[list[str]], hyps: list[str]) -> dict[str, float]:
    """WebNLG / DART: also authors_BLEU, authors_TER, scored as the authors' scripts did (experiments/metrics/webnlg)."""
    if kind != "webnlg":
        return {}
    from experiments.metrics.webnlg import score_webnlg_as_authors

    return {f"authors_{k}": v for k, v in score_webnlg_as_authors(refs, hyps).items()}


def score(kind: str, refs: list[list[str]], hyps: list[str]) -> tuple[dict[str, float], Optional[str]]:
    """(metrics, note): the official-style scores of `kind`; when java or pycocoevalcap is missing, the java-free
    ones (BLEU, NIST / BLEU, TER) and a note saying what is missing and how to rescore."""
    from experiments.metrics import score_e2e, score_webnlg

    fn = score_e2e if kind == "e2e" else score_webnlg
    try:
        return dict(fn(refs, hyps)) | _as_authors(kind, refs, hyps), None
    except Exception as err:  # noqa: BLE001 - only a missing dependency is tolerated, re-raised otherwise
        if not _is_missing_dependency(err):
            raise
        reason = f"{type(err).__name__}: {str(err)[:300]}"
    params = inspect.signature(fn).parameters
    for key, value in (("coco", False), ("meteor", False), ("metrics", list(JAVA_FREE[kind]))):
        if key in params:
            try:
                out = dict(fn(refs, hyps, **{key: value})) | _as_authors(kind, refs, hyps)
            except Exception as err:  # noqa: BLE001
                if not _is_missing_dependency(err):
                    raise
                continue
            return out, (f"{kind} metrics needing java/pycocoevalcap were skipped ({reason}); rescore with "
                         f"`python -m experiments.metrics {kind} --refs references.txt --hyps predictions.txt`")
    return {}, (f"no {kind} metrics: {reason}; rescore with `python -m experiments.metrics {kind} --refs "
                "references.txt --hyps predictions.txt`")
