"""`train.init_from`: start a run's adapter from another run's (paper appendix D.1: MRPC, RTE and STS-B start from
the MNLI LoRA adapter).

`mnli` names the run this run's own sweep makes on MNLI: the same command-line overrides with `task=mnli_n` (and
`train.init_from=`), composed again, so its config hash finds its directory under the scale's results however the
study names it. Any other value is an adapter.safetensors file. The task head starts fresh (MNLI's has three
outputs; the authors' checkpoint carries it and would not load into a two-label head).
Departure from the paper: the MNLI run's last adapter, not its best epoch's.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

MNLI_TASK = "mnli_n"  # the task option Table 2 sweeps for MNLI (n=null at paper scale: all of it)


def mnli_overrides(task_overrides: list[str]) -> list[str]:
    """The overrides of this run's MNLI counterpart: its task swapped for MNLI, init_from cleared."""
    keep = [o for o in task_overrides if not o.lstrip("+~").startswith(("task=", "train.init_from=", "hydra."))]
    return keep + [f"task={MNLI_TASK}", "train.init_from="]


def find_mnli_adapter(cfg: DictConfig) -> Path:
    """adapter.safetensors of this run's finished MNLI counterpart (see the module docstring)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from experiments import shared_runs
    from experiments.rundir import RunDir
    from experiments.train import config_hash

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        raise ValueError("train.init_from=mnli finds the MNLI run through Hydra's overrides; outside the "
                         "`python -m experiments.train` CLI pass the adapter file itself: train.init_from=<path>")
    overrides = mnli_overrides(list(HydraConfig.get().overrides.task))
    chash = config_hash(compose(config_name="config", overrides=overrides))
    scale_root = Path(str(cfg.results_dir)) / "runs" / str(cfg.scale.name)
    run = shared_runs.find_equal(scale_root, chash)
    adapter = None if run is None else run / "adapter.safetensors"
    if adapter is None or not adapter.is_file() or (RunDir(run).read_final() or {}).get("status") != "success":
        raise ValueError(f"task {cfg.task.name} starts from this seed's MNLI adapter (train.init_from=mnli, paper "
                         f"appendix D.1), but no finished MNLI run with config hash {chash} is under {scale_root} "
                         f"(its overrides: {' '.join(overrides)}). Run that first (Table 2's sweep runs MNLI before "
                         "the other tasks with the basic launcher), or set train.init_from='' to start from the "
                         "pretrained model, or train.init_from=<adapter.safetensors>")
    return adapter


def load(model, cfg: DictConfig, head: list[str]) -> Path:
    """Load the init_from adapter's parameters into `model` (its method applied), except the task head `head`."""
    import lora.io

    path = find_mnli_adapter(cfg) if cfg.train.init_from == "mnli" else Path(cfg.train.init_from)
    lora.io.load_adapter(model, path, strict=False, skip=head)
    return path
