"""The configs of every swept run compute what they did before a refactor: config hashes against a snapshot."""
from __future__ import annotations

import json

import pytest
from tests.conftest import REPO

SNAPSHOT = json.loads((REPO / "tests" / "config_hashes.json").read_text())


@pytest.mark.integration  # composes all ~450 runs (about a minute)
def test_every_swept_run_keeps_its_config_hash():
    from experiments import schemas, studies, sweep_points

    schemas.register()
    changed, unexplained = [], []
    now = {f"{t}/{s}": sweep_points.hashes(t, s) for t in studies.names() for s in sweep_points.SCALES}
    before = SNAPSHOT["hashes"]
    for group in sorted(before):  # a table added since the snapshot has nothing to keep
        old, new = before.get(group, {}), now.get(group, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                (changed if group in SNAPSHOT["changed"] else unexplained).append(
                    f"{group} {name}: {old.get(name)} -> {new.get(name)}")
    assert not unexplained, ("runs whose config hash changed with no reason in tests/config_hashes.json "
                             "(`changed`):\n" + "\n".join(unexplained))
    for group in SNAPSHOT["changed"]:  # a listed change that did not happen is a stale entry
        assert any(line.startswith(group + " ") for line in changed), f"{group} is listed as changed but is not"
