"""Every run a table's sweep makes, composed in-process, and the config hash of each.

    python -m experiments.sweep_points [--scale local] [--table table15]     # one line per run: hash, run name

What `make <table>` would run, without running it; tests/test_config_hashes.py compares these hashes with the
snapshot in tests/config_hashes.json, so a change to the configs that changes what a run computes is seen.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SCALES = ("smoke", "local", "paper")


def _axes(params) -> dict[str, list[str]]:
    """hydra.sweeper.params -> {key: [values]} (a value is Hydra's comma-separated sweep string)."""
    return {k: [v.strip() for v in str(vals).split(",")] for k, vals in params.items()}


def points(table: str, scale: str) -> list[dict[str, str]]:
    """The sweep overrides of every run of `table` at `scale` (one dict per run, keys sorted as Hydra sorts);
    call it inside Hydra's initialize_config_dir(CONF_DIR)."""
    cfg = compose(config_name="config", overrides=[f"experiment={table}", f"scale={scale}"], return_hydra_config=True)
    if cfg.table_scales and scale not in cfg.table_scales:
        return []  # the table does not run at this scale
    axes = _axes(cfg.hydra.sweeper.params or {})
    return [dict(sorted(zip(axes, combo))) for combo in itertools.product(*axes.values())]


def hashes(table: str, scale: str) -> dict[str, str]:
    """{run name: config hash} for every run of the sweep (run names as the run directories are named)."""
    from experiments import train

    out = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for point in points(table, scale):
            overrides = [f"experiment={table}", f"scale={scale}"] + [f"{k}={v}" for k, v in point.items()]
            cfg = compose(config_name="config", overrides=overrides)
            seed = point.get("seed", cfg.seed)
            name = train.run_name(",".join(f"{k}={v}" for k, v in point.items() if k != "seed"), seed)
            out[name] = train.config_hash(cfg)
    return out


def tables() -> list[str]:
    """Every table (experiment) the configs declare."""
    import experiments.train  # noqa: F401

    from experiments import studies

    return studies.names()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="local")
    parser.add_argument("--table", help="one table (default: all)")
    args = parser.parse_args(argv)
    for table in [args.table] if args.table else tables():
        for name, h in hashes(table, args.scale).items():
            print(f"{h}  {table}/{name}")


if __name__ == "__main__":
    main()
