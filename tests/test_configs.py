"""Every config file composes against the typed schemas; wrong keys and types fail at composition."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from experiments import schemas
from tests.conftest import CONF, compose

# conf/tables/ holds study files, not options: experiments/studies.py turns them into experiment= options (composed
# in tests/test_experiments.py); row= options come from paper/rows.py
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "tables"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _rows() -> list[str]:
    from paper.rows import ROWS

    return sorted(ROWS)


CASES = [(g, o) for g in GROUPS for o in options(g)] + [("row", key) for key in _rows()]


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


def test_a_row_sets_its_method_and_hyperparameters():
    from paper.rows import ROWS

    for key in ("lora_qv_r4_a32", "pe_lp32_li8", "adapter_d_r24", "full"):
        method = OmegaConf.to_object(compose([f"row={key}"])).method
        assert method.name == ROWS[key].method
        for field, value in ROWS[key].hp:
            assert getattr(method, field) == (list(value) if isinstance(value, tuple) else value), (key, field)


def test_a_bad_study_file_names_the_key_and_the_choices(tmp_path, monkeypatch):
    from experiments import studies

    (tmp_path / "x.yaml").write_text("tables:\n  tableX:\n    sweep: {row: lora_qv_r9}\n")
    monkeypatch.setattr(studies, "TABLES_DIR", tmp_path)
    with pytest.raises(ValueError, match="lora_qv_r9.*known rows: .*lora_qv_r8"):
        studies.load()
    (tmp_path / "x.yaml").write_text("budgets: {}\ntables: {}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['budgets'\].*known: \['config', 'defaults'"):
        studies.load()


def test_tables_of_one_study_share_its_folder_and_budget():
    t15, t5 = compose(["experiment=table15", "row=full"]), compose(["experiment=table5", "row=lora_q_r8"])
    assert (t15.experiment, t15.study, t5.experiment, t5.study) == ("table15", "table15", "table5", "table15")
    assert t5.task.n == t15.task.n and t5.lr_by_method == t15.lr_by_method
    t18 = compose(["experiment=table18", "scale=local"], return_hydra_config=True)
    assert t18.hydra.sweeper.params["method.r"] == "1,4,16,64"  # the table's own sweep at this scale
    assert "same for every r" in " ".join(t18.scale.deviations)
