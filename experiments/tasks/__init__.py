"""Task families: `load_task(task_cfg, scale_cfg)` gives the examples of a run, already split and capped.

One module per family (glue.py for GLUE incl. MNLI-n; generation.py for E2E, WebNLG, DART, whose loader returns a
generation.GenTaskData). What a task needs from the scale (caps on examples) is applied here and every cap that
bites is returned as a deviation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from experiments import data
from experiments.data import Example
from experiments.tasks import generation, glue


@dataclass
class TaskData:
    name: str
    num_labels: int  # 1 = regression
    train: list[Example]
    val: list[Example]  # carved out of TRAIN (task.val_examples), reported as val_*
    evals: dict[str, list[Example]]  # metric prefix ("eval", "eval_mm") -> dev examples
    metrics: Callable[[list, list], dict[str, float]]
    deviations: list[str] = field(default_factory=list)
    source: str = ""
    kind: str = "classification"

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


def known_tasks() -> list[str]:
    return sorted(glue.TASKS) + sorted(generation.TASKS)


def load_task(task_cfg, scale_cfg) -> "TaskData | generation.GenTaskData":
    if getattr(task_cfg, "kind", "classification") == "generation":
        return generation.load(task_cfg, scale_cfg)
    if task_cfg.name not in glue.TASKS:
        raise ValueError(f"unknown task {task_cfg.name!r}; classification tasks: {', '.join(sorted(glue.TASKS))}; "
                         f"generation tasks (task.kind=generation): {', '.join(generation.TASKS)}")
    spec = glue.TASKS[task_cfg.name]
    deviations: list[str] = []
    max_train: Optional[int] = scale_cfg.max_train_examples
    val_n = task_cfg.val_examples
    if val_n < 0:
        raise ValueError(f"task.val_examples must be >= 0, got {val_n}")

    # ---- train pool and the validation carve-out (from TRAIN, never from the dev split we report on)
    if spec.name == "mnli":
        n = task_cfg.n
        if n is None or n <= 0:
            pool = glue.load_mnli_train_hub()  # the full set: the offline subsets must not stand in for it silently
            source = "hub"
        else:
            pool, source = glue.load_mnli_train()
        want = (len(pool) - val_n if n is None or n <= 0 else n)
        if want + val_n > len(pool):
            raise ValueError(
                f"MNLI-n with n={n} (+ val_examples={val_n}) needs {want + val_n} training pairs, but only "
                f"{len(pool)} are available ({source}); lower task.n, or move LORA_DATA_DIR's mnli/ folder aside with "
                "the hub reachable to sample from the full 392,702-pair MNLI train set")
        drawn = data.sample(pool, want + val_n, task_cfg.data_seed)
        train, val = drawn[:want], drawn[want:]
    else:
        train = glue.load_split(spec, spec.train, "train")
        source = "local" if data.task_folder(spec.folder) else "hub"
        if val_n >= len(train):
            raise ValueError(f"task.val_examples={val_n} leaves no training examples ({len(train)} available)")
        shuffled = data.sample(train, len(train), task_cfg.data_seed)
        train, val = shuffled[val_n:], shuffled[:val_n]
    if max_train is not None and len(train) > max_train:
        deviations.append(f"{spec.name}: trained on {max_train} of {len(train)} examples (scale cap)")
        train = data.cap(train, max_train, task_cfg.data_seed)

    # ---- dev splits, a fixed sample of them at capped scales
    evals = {}
    for prefix, (file, hub) in spec.evals.items():
        if prefix == "eval_mm" and not task_cfg.eval_mismatched:
            continue
        rows = glue.load_split(spec, file, hub)
        cap = scale_cfg.max_eval_examples
        if cap is not None and len(rows) > cap:
            deviations.append(f"{spec.name} {prefix}: a fixed sample (seed {glue.EVAL_SUBSET_SEED}) of {cap} of the "
                              f"{len(rows)} dev examples")
            rows = data.cap(rows, cap, glue.EVAL_SUBSET_SEED)
        evals[prefix] = rows
    if val:
        val = data.cap(val, scale_cfg.max_eval_examples, glue.EVAL_SUBSET_SEED)
    return TaskData(spec.name, spec.num_labels, train, val, evals, spec.metrics, deviations, source)
