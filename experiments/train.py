"""Train one configuration and write its run directory.

    python -m experiments.train model=minilm task=mnli_n task.n=1000 method=lora method.r=8 seed=0
    python -m experiments.train -m scale=smoke method=lora,bitfit seed=0,1,2      # a sweep (Hydra multirun)
    python -m experiments.train model=smollm2 task=e2e train=e2e method.r=4 method.alpha=32   # generation (E2E)

Generation tasks (task.kind=generation: e2e, webnlg, dart) need a decoder (model=decoder_smoke/smollm2/gpt2_medium):
after training they decode the test inputs with beam search and write predictions.txt, references.txt and
inputs.jsonl beside final.json (experiments/generate.py).

The run directory is results/runs/<scale>/<experiment>/<overrides>,seed=<seed> (conf/config.yaml). A run whose
final.json says success is skipped; a killed run resumes from its checkpoint; a failed or diverged one restarts.
A failure writes final.json (status failed, the error) and then: single run -> the exception propagates (non-zero
exit); multirun -> it is logged and the sweep goes on with the next run.

Data-parallel over N processes: `torchrun --nproc_per_node N -m experiments.train ...` (experiments/distributed.py);
rank 0 writes the run directory, the others only train.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

import lora.methods
from experiments import distributed, schemas

log = logging.getLogger(__name__)
# keys that do not change what a run computes: kept out of the config hash, so equal computations that two tables
# name differently share one run (experiments/shared_runs.py). lr_by_method: only train.lr, resolved from it, counts;
# experiment, study and scale.deviations name and describe a run, they do not change it; recipe: only the values it
# resolves to count.
NOT_COMPUTED = ("logger", "results_dir", "lr_by_method", "experiment", "study", "recipe", "table_scales")
NOT_COMPUTED_TRAIN = ("threads", "device", "kill_after_steps", "kill_at", "eval_batch_size", "checkpoint_every",
                      "progress_every", "gradient_checkpointing")  # recomputation gives the same numbers
NOT_COMPUTED_SCALE = ("deviations",)
GENERATION_OUTPUTS = ("predictions.txt", "references.txt", "inputs.jsonl")  # experiments/generate.py writes them


MAX_NAME = 200  # file systems allow 255 bytes per path component


def run_name(override_dirname: str, seed) -> str:
    """Directory name of a run: the command-line overrides (Hydra's override_dirname) plus the seed, always; a name
    too long for the file system keeps its start and gets a hash of the whole (still one folder per config)."""
    name = ",".join(p for p in (str(override_dirname), f"seed={seed}") if p)
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:MAX_NAME - 40].decode(errors='ignore')}...{digest},seed={seed}"


def record_subdir(output_dir: str):
    """hydra.output_subdir: where Hydra writes a job's config, `.hydra`, except into a finished run (its final.json
    there: a rerun sweep, or a symlink to another table's equal run), whose record it would otherwise overwrite
    with the later sweep's names before the run is skipped."""
    return None if (Path(output_dir) / "final.json").exists() else ".hydra"


OmegaConf.register_new_resolver("run_name", run_name, replace=True)
OmegaConf.register_new_resolver("record_subdir", record_subdir, replace=True)
schemas.register()


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that changes the computation (a checkpoint refuses to resume under another config)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_COMPUTED:
        plain.pop(key, None)
    for key in NOT_COMPUTED_TRAIN:
        plain.get("train", {}).pop(key, None)
    for key in NOT_COMPUTED_SCALE:
        plain.get("scale", {}).pop(key, None)
    for (group, key), default in schemas.ADDED_LATER.items():
        if key in plain.get(group, {}) and plain[group][key] == default:
            del plain[group][key]
    train = plain.get("train", {})
    if "precision" in train:  # what it resolves to here (auto: fp32 on CPU, bf16 on a GPU at paper scale)
        from experiments import precision

        dev = distributed.device(cfg.train.device)
        train["precision"] = precision.resolve(train["precision"], dev, plain.get("scale", {}).get("name", ""))
        if dev.type != "cuda":
            train.pop("tf32", None)  # TF32 exists only on CUDA
    method = plain.get("method", {})
    if method.get("name") in lora.methods.registry():  # `method=full method.r=8` is method=full
        used = lora.methods.get(method["name"]).fields
        plain["method"] = {k: v for k, v in method.items() if k == "name" or k in used}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lora_init_seed(seed: int, r: int) -> int:
    """The seed of LoRA's init for a run seed and rank: independent draws for every (seed, r)."""
    return int(hashlib.sha256(f"lora-init:{seed}:{r}".encode()).hexdigest()[:15], 16)


def validate(cfg: schemas.Config) -> None:
    """Value checks the type schema cannot express; each error names the key and the way out."""
    from experiments.models import validate as validate_model

    if cfg.table_scales and cfg.scale.name not in cfg.table_scales:
        raise ValueError(f"experiment={cfg.experiment} runs at scale {' / '.join(cfg.table_scales)} only (its models "
                         f"need the hub and GPUs), not at scale={cfg.scale.name}; see conf/tables/ for the tables "
                         "that run at this scale")
    validate_model(cfg.model)
    cfg.method.validate()
    t = cfg.train
    if t.lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {t.lr}")
    if t.max_steps <= 0 and t.epochs <= 0:
        raise ValueError("set train.epochs > 0 or train.max_steps > 0")
    if not 0 <= t.warmup_ratio < 1:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    for key in ("batch_size", "grad_accum", "eval_batch_size"):
        if getattr(t, key) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.label_smoothing and cfg.task.kind != "generation":
        raise ValueError("train.label_smoothing is implemented for generation tasks only; set it to 0")
    if cfg.task.max_seq_len < 8:
        raise ValueError(f"task.max_seq_len must be >= 8, got {cfg.task.max_seq_len}")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ValueError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if t.warmup_steps < 0:
        raise ValueError(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    if t.group_by_length < 0:
        raise ValueError(f"train.group_by_length must be >= 0 (0: random batches; 50: groups of 50 batches sorted "
                         f"by length), got {t.group_by_length}")
    if t.select_best and not (t.eval_every_epoch or t.eval_every > 0):
        raise ValueError(f"train.select_best={t.select_best!r} picks among mid-run evaluations, and there are none: "
                         "set train.eval_every_epoch=true or train.eval_every=<steps>")
    if t.adam_eps <= 0:
        raise ValueError(f"train.adam_eps must be > 0, got {t.adam_eps}")
    from paper.recipes import RECIPES

    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe={cfg.recipe!r} is not one of {', '.join(RECIPES)} (paper/recipes.py)")
    if t.init_from and t.init_from != "mnli" and not Path(t.init_from).is_file():
        raise ValueError(f"train.init_from={t.init_from!r}: neither 'mnli' (this seed's MNLI run of the study) nor "
                         "an adapter.safetensors file; set it to '' to start from the pretrained model")
    if cfg.task.kind == "generation":
        if cfg.model.kind != "decoder":
            raise ValueError(f"task {cfg.task.name!r} generates text, but model {cfg.model.name!r} is an encoder: pick "
                             "a decoder (model=decoder_smoke / tiny_gpt2 at scale=smoke, model=smollm2 at local, "
                             "model=gpt2_medium or gpt2_large at paper)")
        if not (0 <= cfg.task.val_fraction and 0 < cfg.task.test_fraction and
                cfg.task.val_fraction + cfg.task.test_fraction < 1):
            raise ValueError(f"task.val_fraction ({cfg.task.val_fraction}) and task.test_fraction "
                             f"({cfg.task.test_fraction}) must be >= 0, > 0 and sum to less than 1")
    elif cfg.task.kind != "classification":
        raise ValueError(f"task.kind must be classification or generation, got {cfg.task.kind!r}")
    elif cfg.model.kind != "encoder":
        raise ValueError(f"task {cfg.task.name!r} needs a classifier, but model {cfg.model.name!r} is a "
                         f"{cfg.model.kind} (causal LM): pick an encoder (model=minilm) or put a classification "
                         "head on it with model.kind=encoder")


def make_job(tokenizer, task, cfg: schemas.Config):
    """The task family's job for the training loop (experiments.loop.Job)."""
    if cfg.task.kind == "generation":
        from experiments.generate import GenerationJob

        return GenerationJob(tokenizer, task, cfg)
    from experiments.classify import ClassificationJob

    return ClassificationJob(tokenizer, task, cfg)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check(cfg: DictConfig) -> schemas.Config:
    """Every setting that can fail before training: a config that fails here writes nothing (not even a folder)."""
    obj: schemas.Config = OmegaConf.to_object(cfg)
    _refuse_schema_choices()
    validate(obj)
    from experiments import precision

    precision.resolve(obj.train.precision, distributed.device(obj.train.device), obj.scale.name)  # no CUDA, no dtype
    if obj.train.init_from == "mnli":
        from experiments.init_from import find_mnli_adapter

        find_mnli_adapter(cfg)  # the MNLI run must have finished before this one starts
    _warn_unused_method_keys(obj.method.name)
    return obj


def _choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _refuse_schema_choices() -> None:
    """`method=method_schema` would train the bare type schema: the *_schema entries are types, not options."""
    for group, choice in _choices().items():
        if isinstance(choice, str) and choice.endswith("_schema") and "/" not in group and not group.startswith("hydra"):
            known = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / group).glob("*.yaml"))
            raise ValueError(f"{group}={choice} is the type schema of the {group} group, not an option; known "
                             f"{group} options: {', '.join(known)}")


def _warn_unused_method_keys(method: str) -> None:
    """`method=full method.r=8` is method=full: say so (the key is also kept out of the config hash)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    used = set(lora.methods.get(method).fields)
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("method.") and key.split(".")[1] not in used | {"name"}:
            log.warning("%s has no effect on method=%s (it reads: %s); the run is method=%s's", override, method,
                        ", ".join(sorted(used)) or "no hyperparameters", method)


def _discard_fresh(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run that was refused before it started (never one with a record)."""
    from experiments.shared_runs import is_fresh

    if run_dir.is_dir() and not run_dir.is_symlink() and is_fresh(run_dir):
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def run(cfg: DictConfig, run_dir: Optional[str | Path] = None) -> dict:
    """Train `cfg` into `run_dir` (default: Hydra's output dir) and return what final.json holds. A run directory
    another live process holds (its .lock) is left alone: two sweeps over the same rows share the work."""
    from experiments import shared_runs
    from experiments.rundir import RunDir

    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    distributed.init()
    try:
        check(cfg)
    except Exception as e:  # noqa: BLE001 - refused before the run directory is touched
        if distributed.is_main():
            _discard_fresh(run_dir)
        if is_multirun():
            log.error("refused %s: %s: %s; the sweep goes on", run_dir, type(e).__name__, e)
            return {"status": "refused", "error": f"{type(e).__name__}: {e}", "metrics": {}}
        raise
    if distributed.is_main():
        try:
            run_dir = shared_runs.share(run_dir, Path(str(cfg.results_dir)) / "runs" / str(cfg.scale.name),
                                        config_hash(cfg))
        except Exception as e:  # noqa: BLE001 - the other ranks wait in broadcast(): tell them, then fail
            distributed.broadcast({"status": "failed", "error": f"{type(e).__name__}: {e}", "metrics": {}})
            raise
    rd = RunDir(run_dir)
    if not distributed.is_main():  # rank 0 takes the lock and says whether the run trains (after its clean-up)
        skipped = distributed.broadcast(None)
        return skipped if skipped is not None else _run(cfg, rd)
    owner = rd.lock()
    if owner is not None:
        print(f"skipping {rd.path}: process {owner} is running it (delete {rd.lock_path} if it is not)", flush=True)
        return distributed.broadcast({"status": "running", "owner": owner, "metrics": {}})
    try:
        try:
            prepared = _prepare(cfg, rd)
        except Exception as e:  # noqa: BLE001 - as above: the other ranks must not wait forever
            distributed.broadcast({"status": "failed", "error": f"{type(e).__name__}: {e}", "metrics": {}})
            raise
        skipped = distributed.broadcast(prepared)
        return skipped if skipped is not None else _run(cfg, rd)
    finally:
        rd.unlock()


def _prepare(cfg: DictConfig, rd) -> Optional[dict]:
    """final.json of a finished run to skip, or None once the directory is ready to (re)start or resume.

    A checkpoint is progress: it is resumed after a kill and after a failed attempt (a failure before training, or
    an error a fix has since removed); it is dropped only for a diverged run, a changed config, or a finished run."""
    final = rd.read_final()
    previous = None if final is None else final["status"]
    chash = config_hash(cfg)
    if previous == "success":
        if final.get("config_hash") in (None, chash):
            rd.drop_checkpoint()  # a kill after final.json, before the checkpoint went
            print(f"skipping {rd.path}: final.json says success (delete it to run again)", flush=True)
            return final
        print(f"rerunning {rd.path}: its configuration changed since it finished (e.g. a study file's learning "
              "rate); the old result is replaced", flush=True)
        previous = "stale"
    has_checkpoint = (rd.ckpt / "latest.json").exists()
    if has_checkpoint and rd.checkpoint_hash() not in (None, chash):
        print(f"restarting {rd.path}: its checkpoint was written under another configuration", flush=True)
        has_checkpoint = False
    if previous in ("diverged", "stale") or not has_checkpoint:
        rd.drop_checkpoint()
        rd.reset()
        for name in GENERATION_OUTPUTS:  # a generation run's files from an earlier attempt
            (rd.path / name).unlink(missing_ok=True)
    else:  # resume: only the record of the failed (or damaged) attempt goes
        rd.final.unlink(missing_ok=True)
    return None


def _kill_at(obj: schemas.Config, moment: str) -> None:
    if obj.train.kill_at == moment:
        os.kill(os.getpid(), signal.SIGKILL)  # test hook: a real crash at this moment of the run's end


def _run(cfg: DictConfig, rd) -> dict:
    """Train and (rank 0) write the run directory; _prepare has run."""
    import torch

    import lora.io
    from experiments import base_weights, loop
    from experiments.launch import job_threads
    from experiments.rundir import git_commit, git_dirty, package_versions
    from experiments.tasks import load_task
    from experiments.tracking import Tracker

    main = distributed.is_main()
    chash = config_hash(cfg)
    t0 = time.perf_counter()
    base = {"scale": cfg.scale.name, "experiment": cfg.experiment, "seed": cfg.seed,
            "versions": package_versions(), "git_commit": git_commit(), "git_dirty": git_dirty(),
            "config_hash": chash,
            "deviations": list(cfg.scale.deviations)}
    tracker = None
    try:
        obj: schemas.Config = OmegaConf.to_object(cfg)  # run() has checked it
        threads = loop.set_threads(job_threads(obj.train.threads))  # a parallel launcher's share of the cores
        task = load_task(obj.task, obj.scale)
        torch.manual_seed(obj.seed)  # the classification head and tiny models follow the run's seed
        from experiments.models import load_model

        model, tokenizer = load_model(obj.model, num_labels=task.num_labels)
        if tokenizer is None:
            raise ValueError(f"model {obj.model.name!r} comes without a tokenizer; set model.tokenizer to an "
                             "embedded model's name (e.g. minilm)")
        if lora.methods.get(obj.method.name).has_delta_w:
            # A's init from a generator seeded by (seed, r): kaiming-uniform rows are drawn in order with a bound that
            # does not depend on r, so under one seed r=8's A would be the first 8 rows of r=64's (Figure 3/4)
            torch.manual_seed(lora_init_seed(obj.seed, obj.method.r))
        lora.apply_method(model, obj.method)
        if obj.train.init_from:
            from experiments import init_from

            base["init_from"] = str(init_from.load(model, cfg, head=obj.method.train_also))
        if obj.train.gradient_checkpointing:  # non-reentrant: works with a frozen embedding (LoRA, adapters)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(distributed.device(obj.train.device))
        counts = lora.count_parameters(model, exclude=obj.method.train_also)
        resume = (rd.ckpt / "latest.json").exists()
        tracker = Tracker(rd, obj.logger, name=rd.path.name, group=f"{obj.scale.name}/{obj.experiment}",
                          tags=[obj.scale.name, obj.method.name, obj.task.name, obj.model.name],
                          config=OmegaConf.to_container(cfg, resolve=True),
                          resume=resume) if main else distributed.NoTracker()
        result = loop.train(model, make_job(tokenizer, task, obj), obj, rd, tracker, chash)
        if not main:
            return {"status": result.status, "rank": distributed.rank(), "metrics": result.metrics}
        if result.status == "success":
            lora.io.save_adapter(model, rd.adapter, metadata={"method": obj.method.name, "model": obj.model.name,
                                                              "r": obj.method.r, "alpha": obj.method.alpha,
                                                              "scaling": obj.method.scaling,
                                                              "task": obj.task.name, "steps": result.steps})
            if lora.methods.get(obj.method.name).has_delta_w:  # W0 under the adapters: ΔW vs W (Table 7, Figure 8)
                base_weights.save(model, rd.path)
        _kill_at(obj, "before_final")
        final = base | {
            "status": result.status, "error": result.error, "metrics": result.metrics,
            "params": {"trainable": counts.trainable, "total": counts.total, "method": counts.method},
            "steps": result.steps, "total_steps": result.total_steps, "resumed_from_step": result.resumed_from,
            "train_examples": len(task.train), "val_examples": len(task.val),
            "eval_examples": {k: len(v) for k, v in task.evals.items()}, "data_source": task.source,
            "deviations": base["deviations"] + task.deviations + result.deviations,
            "timing": result.timing, "threads": threads,
        }
    except Exception as e:  # noqa: BLE001 - recorded, then re-raised in a single run
        final = base | {"status": "failed", "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc(limit=8), "metrics": {}}
        if main:
            _finish(rd, final, t0, tracker)
        if is_multirun():
            if main:
                log.error("run %s failed (%s); the sweep goes on", rd.path, final["error"])
            return final
        raise
    _finish(rd, final, t0, tracker, kill_at=obj.train.kill_at)
    print(f"{final['status']}: {rd.path} {json.dumps(final['metrics'])}", flush=True)
    return final


def _finish(rd, final: dict, t0: float, tracker, kill_at: str = "") -> None:
    """final.json first (its presence means the run is over), then the checkpoint goes, then wandb: a kill at any
    moment leaves either a resumable checkpoint or a finished record. A failed run keeps its checkpoint."""
    from experiments.rundir import atomic_write_json, peak_memory_mb

    final |= {"wall_time_s": time.perf_counter() - t0, "peak_mem_mb": peak_memory_mb()}
    atomic_write_json(rd.final, final)
    if kill_at == "after_final":
        os.kill(os.getpid(), signal.SIGKILL)  # test hook
    if final["status"] != "failed":
        rd.drop_checkpoint()
    if tracker is not None:
        tracker.finish(final)


class OutputDirCheck(Callback):
    """Registered in conf/config.yaml: Hydra creates the output folder before any of our code runs, so an unwritable
    results_dir would end in Hydra's bare OSError. Hydra 1.3 turns a callback's exception into a warning (it cannot
    stop the run), so this prints our message, with the way out, just above Hydra's."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from experiments.rundir import make_dir

        if distributed.is_main():
            make_dir(config.results_dir, "results directory")

    on_multirun_start = on_run_start


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    sys.argv += distributed.worker_hydra_overrides()
    main()
