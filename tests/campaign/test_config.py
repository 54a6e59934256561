"""Campaign config validation: the shipped files load, and bad files fail with a message
that names the file, the field and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from multisite_drp.campaign.config import (
    CampaignConfigError,
    Sharding,
    SiteRole,
    load_campaign,
)
from pydantic import ValidationError

CAMPAIGNS = Path(__file__).resolve().parents[2] / "include" / "campaigns"
EMBEDDED = CAMPAIGNS / "minidrp_embedded.yaml"
PRODUCTION = CAMPAIGNS / "drp_production.yaml"


def test_embedded_campaign_loads() -> None:
    cfg = load_campaign(EMBEDDED)
    assert cfg.name == "minidrp"
    assert [s.name for s in cfg.sites] == ["usdf", "frdf", "ukdf"]
    assert cfg.hub.name == "usdf"
    assert [s.name for s in cfg.steps] == [f"step{i}" for i in range(1, 10)]
    assert {s.name for s in cfg.steps if s.sharding is Sharding.global_} == {"step3", "step9"}
    # Relative repos resolve under data_root, which is relative to the campaign file.
    assert Path(cfg.repo_of("frdf")) == (CAMPAIGNS / "../../var/embedded/frdf").resolve()
    assert cfg.pipeline_path.is_file()


def test_production_campaign_has_dmtn213_shape() -> None:
    cfg = load_campaign(PRODUCTION)
    shares = {s.name: s.share for s in cfg.sites}
    assert shares == {"usdf": 0.35, "frdf": 0.40, "ukdf": 0.25}
    assert {s.compute_site for s in cfg.sites} == {"SLAC", "CC-IN2P3", "LANCS"}
    assert cfg.site("usdf").rse == "SLAC_BUTLER_DISK"
    assert cfg.site("usdf").role is SiteRole.hub
    assert cfg.site("frdf").holds_all_raws
    # URIs are left alone, absolute paths kept.
    assert cfg.repo_of("usdf").startswith("s3://")
    assert cfg.repo_of("frdf") == "/sps/lsst/butler/main/butler.yaml"


def test_data_root_override_and_no_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_campaign(EMBEDDED, data_root=tmp_path)
    assert cfg.repo_of("ukdf") == str(tmp_path / "ukdf")
    assert cfg.work_path == tmp_path / "work"
    # Nothing is expanded: an environment variable or '~' is refused, its value never echoed.
    monkeypatch.setenv("MSDRP_TEST_ROOT", str(tmp_path / "secret-x"))
    for value in ("${MSDRP_TEST_ROOT}", "$MSDRP_TEST_ROOT/sites", "~/sites"):
        with pytest.raises(CampaignConfigError, match=r"data_root: .*(environment variables|'~') .*not expanded") as info:
            load_campaign(EMBEDDED, data_root=value)
        assert "secret-x" not in str(info.value)


def _base() -> dict:
    return yaml.safe_load(EMBEDDED.read_text())


def _set(doc: dict, dotted: str, value) -> None:
    node = doc
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


class _Delete:
    """Marks a field to delete (a stable repr: pytest-xdist workers must agree on test ids)."""

    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Delete()

# (mutation field path, new value, substring that the error must contain)
BAD_CASES = [
    ("name", "my campaign", "name: String should match pattern"),
    ("name", "../etc", "name: String should match pattern"),
    ("instrument", "Mini Cam", "instrument: String should match pattern"),
    ("input_collections", [], "input_collections: List should have at least 1 item"),
    ("input_collections", ["MiniCam/defaults; rm -rf /"], "input_collections[0]: String should match pattern"),
    ("input_collections", ["MiniCam//defaults"], "input_collections[0]: String should match pattern"),
    ("output_prefix", "/abs/prefix", "output_prefix: String should match pattern"),
    ("output_prefix", _DELETE, "output_prefix: required field is missing"),
    ("data_query", "visit = 1;\n drop table", "data_query: expected a single-line butler query"),
    ("failed_quanta_threshold", 1.5, "failed_quanta_threshold: Input should be less than or equal to 1"),
    ("rate_target.quanta_per_hour", 0, "rate_target.quanta_per_hour: Input should be greater than 0"),
    ("rate_target", _DELETE, "rate_target: required field is missing"),
    ("replication", _DELETE, "replication: required field is missing"),
    ("replication.scope", "Drp-Scope", "replication.scope: String should match pattern"),
    ("replication.scope", "a" * 26, "replication.scope: String should match pattern"),
    ("replication.lifetime_days", 0, "replication.lifetime_days: Input should be greater than 0"),
    ("sites", [], "sites: List should have at least 1 item"),
    ("sites.1.name", "FrDF", "sites[1] (FrDF).name: String should match pattern"),
    ("sites.1.name", "usdf", "sites: site names must be unique; repeated: usdf"),
    ("sites.1.role", "hub", "sites: expected exactly one site with role 'hub', found 2"),
    ("sites.0.role", "remote", "sites: expected exactly one site with role 'hub', found 0"),
    ("sites.1.role", "spoke", "sites[1] (frdf).role: Input should be 'hub' or 'remote'"),
    ("sites.1.share", 0.5, "sites: shares must sum to 1.0, they sum to 1.1"),
    ("sites.2.share", 0, "sites[2] (ukdf).share: Input should be greater than 0"),
    ("sites.2.share", -0.25, "sites[2] (ukdf).share: Input should be greater than 0"),
    ("sites.2.rse", "frdf_local_disk", "sites[2] (ukdf).rse: String should match pattern"),
    ("sites.2.rse", "FRDF_LOCAL_DISK", "sites: every site needs its own rse"),
    ("sites.0.butler_repo", "usdf; rm -rf ~", "sites[0] (usdf).butler_repo: expected a path or URI"),
    ("sites.0.connections.butler", "Drp-Usdf", "sites[0] (usdf).connections.butler: String should match pattern"),
    ("sites.0.connections", {"butler": "a", "replica": "b"}, "sites[0] (usdf).connections.workflow: required field"),
    ("sites.0.sharee", 0.35, "sites[0] (usdf).sharee: unknown field (check its spelling)"),
    ("steps", [], "steps: List should have at least 1 item"),
    ("steps.1.name", "step1", "steps: step names must be unique; repeated: step1"),
    ("steps.2.sharding", "healpix", "steps[2] (step3).sharding: Input should be 'visit', 'tract' or 'global'"),
    ("steps.0.requires", ["raw-data"], "steps[0] (step1).requires[0]: String should match pattern"),
    ("steps.0.name", "Step 1", "steps[0] (Step 1).name: String should match pattern"),
    ("planner.max_group_size", 0, "planner.max_group_size: Input should be greater than 0"),
    ("planner.method", "kmeans", "planner.method: Input should be 'graph', 'ra_stripes' or 'round_robin'"),
    ("extra_top_level", 1, "extra_top_level: unknown field (check its spelling)"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD_CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in BAD_CASES])
def test_bad_campaign_is_rejected_with_a_clear_message(tmp_path: Path, field: str, value, expected: str) -> None:
    doc = copy.deepcopy(_base())
    _set(doc, field, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path, check_pipeline=False)
    message = str(info.value)
    assert str(path) in message, message
    assert expected in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError, match=r"nope.yaml: cannot read campaign file"):
        load_campaign(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsites: [\n  - oops: : :\n")
    with pytest.raises(CampaignConfigError, match=r"broken.yaml: not valid YAML at line \d+, column \d+"):
        load_campaign(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(CampaignConfigError, match=r"list.yaml: expected a mapping .* got list"):
        load_campaign(path)


def test_pipeline_must_exist(tmp_path: Path) -> None:
    doc = _base()
    doc["pipeline"] = str(tmp_path / "missing.yaml")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CampaignConfigError, match=r"c.yaml: pipeline: file .*missing.yaml does not exist"):
        load_campaign(path)


def test_step_subset_must_be_declared_by_the_pipeline(tmp_path: Path) -> None:
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"description": "x", "tasks": {}, "subsets": {"step1": ["a"]}}))
    doc = _base()
    doc["pipeline"] = str(pipe)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CampaignConfigError, match=r"steps\[1\] \(step2\).subset: expected one of .*'step1'.* got 'step2'"):
        load_campaign(path)


def test_config_is_immutable() -> None:
    cfg = load_campaign(EMBEDDED, check_pipeline=False)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.name = "other"  # type: ignore[misc]
