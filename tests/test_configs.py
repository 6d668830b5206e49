"""Every config file composes against the typed schemas; wrong keys and types fail at composition."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from experiments import schemas
from tests.conftest import CONF, compose

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_is_typed(group, option):
    cfg = compose([f"{group}={option}"])
    obj = OmegaConf.to_object(cfg)  # every field converts to its schema type
    assert isinstance(obj, schemas.Config)
    if group == "method":
        obj.method.validate()


@pytest.mark.parametrize("scale,model", [("smoke", "tiny_bert"), ("local", "minilm"), ("paper", "roberta_base")])
def test_scale_picks_its_model(scale, model):
    """config.yaml's `model: encoder_${scale}` follows the scale choice; model=... still overrides it."""
    assert compose([f"scale={scale}"]).model.name == model
    assert compose([f"scale={scale}", "model=tiny_bert"]).model.name == "tiny_bert"


def test_defaults():
    cfg = compose([])
    assert (cfg.scale.name, cfg.model.name, cfg.task.name, cfg.task.n, cfg.method.name) == \
        ("local", "minilm", "mnli", 1000, "lora")
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"
    assert cfg.scale.max_eval_examples == 2000 and cfg.scale.deviations


@pytest.mark.parametrize("override,needle", [
    ("train.lrr=1e-3", "lrr"),                  # a typo in a key
    ("train.batch_size=sixteen", "batch_size"),  # a value of the wrong type
    ("task.n=many", "n"),
    ("method.r=1.5", "r"),
    ("scale=huge", "huge"),                      # an option that does not exist
])
def test_wrong_key_or_type_fails_at_composition(override, needle):
    with pytest.raises(ConfigCompositionException) as err:
        compose([override])
    text = str(err.value) + str(err.value.__cause__)
    assert needle in text


def test_run_dir_layout():
    """results/runs/<scale>/<experiment>/<overrides>,seed=<seed>; logger and results_dir stay out of the name."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(["scale=smoke", "method.r=4", "seed=3", "logger=none", "results_dir=/x"],
                  return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir == "/x/runs/smoke/adhoc/method.r=4,seed=3"
    assert cfg.hydra.sweep.dir == "/x/runs/smoke/adhoc"
    cfg = compose([], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir == "results/runs/local/adhoc/seed=0"
