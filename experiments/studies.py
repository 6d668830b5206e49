"""The paper's tables as Hydra options, from one file per study (conf/tables/<study>.yaml) and paper/rows.py.

A study file declares, side by side, what its tables share (config groups, config, a budget per scale) and each
table's sweep. For every table this registers in Hydra's ConfigStore, before composition:
  experiment/<table>         its groups, config, `experiment` and `study` (the folder its runs go into), its sweep
  budget/<table>_<scale>     the study's budget at that scale with the table's additions (conf/config.yaml selects it)
and for every key of paper/rows.py the option row/<key>. `python -m experiments.train experiment=<table>` and
`--cfg job` see ordinary Hydra configs. The file format is written at the top of conf/tables/table15.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from paper.rows import ROWS

TABLES_DIR = Path(__file__).resolve().parents[1] / "conf" / "tables"
SCALES = ("smoke", "local", "paper")
STUDY_KEYS = {"defaults", "config", "scales", "tables"}
TABLE_KEYS = {"folder", "defaults", "config", "sweep", "scales", "at"}
SCALE_KEYS_TABLE = {"sweep", "config", "deviations"}


def _sweep_string(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _check(path: Path, study: dict) -> None:
    """Refuse a study file with an unknown key, scale or row: the error names the file, the key and the choices."""
    def unknown(where: str, got, known) -> None:
        extra = sorted(set(got) - set(known))
        if extra:
            raise ValueError(f"{path}: unknown key(s) {extra} in {where}; known: {sorted(known)}")

    unknown("the study", study, STUDY_KEYS)
    unknown("scales", study.get("scales") or {}, SCALES)
    for name, table in (study.get("tables") or {}).items():
        unknown(f"tables.{name}", table, TABLE_KEYS)
        unknown(f"tables.{name}.scales", table.get("scales") or {}, SCALES)
        unknown(f"tables.{name}.at", table.get("at") or [], SCALES)
        for scale, extra in (table.get("scales") or {}).items():
            unknown(f"tables.{name}.scales.{scale}", extra, SCALE_KEYS_TABLE)
        if not table.get("sweep"):
            raise ValueError(f"{path}: tables.{name} declares no sweep")
        for key in _sweep_string(table["sweep"].get("row", "")).split(","):
            if key and key not in ROWS:
                raise ValueError(f"{path}: tables.{name} sweeps row {key!r}, which paper/rows.py does not declare; "
                                 f"known rows: {', '.join(sorted(ROWS))}")


def load() -> dict[str, tuple[Path, dict, dict]]:
    """{table: (study file, study, table)} for every table of every study file (names unique across files)."""
    out: dict[str, tuple[Path, dict, dict]] = {}
    for path in sorted(TABLES_DIR.glob("*.yaml")):
        study = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        _check(path, study)
        for name, table in study["tables"].items():
            if name in out:
                raise ValueError(f"table {name!r} is declared twice: {out[name][0]} and {path}")
            out[name] = (path, study, table)
    return out


def names() -> list[str]:
    return sorted(load())


def _defaults(study: dict, table: dict) -> list[dict[str, str]]:
    groups = dict(study.get("defaults") or {}) | dict(table.get("defaults") or {})
    return [{f"override /{g}": option} for g, option in groups.items()]


def experiment_node(name: str, study: dict, table: dict) -> dict:
    node = {"defaults": _defaults(study, table), **OmegaConf.to_container(OmegaConf.merge(
        study.get("config") or {}, table.get("config") or {}))}
    node |= {"experiment": name, "study": table.get("folder", name), "table_scales": list(table.get("at") or []),
             "hydra": {"sweeper": {"params": {k: _sweep_string(v) for k, v in table["sweep"].items()}}}}
    return node


def budget_node(study: dict, table: dict, scale: str) -> dict | None:
    """The study's budget at `scale` with the table's additions; None when neither sets anything."""
    shared = dict((study.get("scales") or {}).get(scale) or {})
    own = dict((table.get("scales") or {}).get(scale) or {})
    if not shared and not own:
        return None
    shared_deviations, own_deviations = shared.pop("deviations", None), own.pop("deviations", None)
    deviations = own_deviations if own_deviations is not None else shared_deviations
    node = OmegaConf.to_container(OmegaConf.merge(shared, own.pop("config", None) or {}))
    if "sweep" in own:
        node["hydra"] = {"sweeper": {"params": {k: _sweep_string(v) for k, v in own.pop("sweep").items()}}}
    if deviations is not None:  # the whole list printed under the table at this scale
        node.setdefault("scale", {})["deviations"] = list(deviations)
    return node


def row_node(key: str) -> dict:
    row = ROWS[key]
    return {"defaults": [{"override /method": row.method}],
            "method": {k: list(v) if isinstance(v, tuple) else v for k, v in row.hp}}


def register() -> None:
    cs = ConfigStore.instance()
    for key in ROWS:
        cs.store(group="row", name=key, node=row_node(key), package="_global_")
    for name, (_, study, table) in load().items():
        cs.store(group="experiment", name=name, node=experiment_node(name, study, table), package="_global_")
        for scale in SCALES:
            node = budget_node(study, table, scale)
            if node is not None:
                cs.store(group="budget", name=f"{name}_{scale}", node=node, package="_global_")
