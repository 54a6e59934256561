"""BPS submit files: they load with ctrl_bps's own BpsConfig, carry the right keys and groups."""

from __future__ import annotations

import yaml
from layouts import small_inputs
from lsst.ctrl.bps import BpsConfig
from multisite_drp.campaign import names
from multisite_drp.campaign.bps_config import (
    EMBEDDED_WMS_SERVICE,
    PANDA_WMS_SERVICE,
    write_bps_configs,
)
from multisite_drp.campaign.config import CampaignConfig
from multisite_drp.campaign.planner import plan_campaign


def _panda(config: CampaignConfig) -> CampaignConfig:
    data = config.model_dump()
    data["sites"][1].update(compute_site="CC-IN2P3", compute_cloud="EU", queue="CC-IN2P3_Rubin")
    data["planner"]["max_group_size"] = 10
    data["planner"].pop("cluster_by")  # the default, as at a Data Facility: per visit / exposure / tract
    return CampaignConfig.model_validate({**data, "source_path": config.source_path})


def test_bps_yaml_loads_in_bpsconfig(config, flow, tmp_path) -> None:
    cfg = _panda(config)
    inputs = small_inputs(seed=2, n_visits=120)
    plan = plan_campaign(cfg, inputs, dataflow=flow)
    paths = write_bps_configs(cfg, plan, tmp_path)
    assert paths
    seen_visits: dict[str, list[int]] = {}
    for p in paths:
        step, site = p.parent.parent.name, p.parent.name
        bps = BpsConfig(str(p))
        assert bps[".payload.butlerConfig"] == cfg.repo_of(site)
        assert bps[".payload.inCollection"] == "MiniCam/defaults"
        assert bps[".payload.output"] == names.output_chain(cfg, step, site)
        g = int(p.stem.removeprefix("group"))  # the DAG's own names of the group: what the PanDA adapter submits
        assert bps[".payload.outputRun"] == names.output_run(cfg, step, site, 0, g)
        assert bps[".payload.outputRun"].endswith(f"/g0/group{g:03d}")
        assert bps["submitPath"] == str(names.submit_dir(cfg, step, site, 0, g))
        assert bps["uniqProcName"] == names.workflow_name(cfg, step, site, 0, g)
        assert bps[".payload.dataQuery"] == plan.group_query(step, site, g)
        if step == "step1":  # raw-level tasks by exposure, visit-level by visit: ctrl_bps's own clustering
            assert bps["clusterAlgorithm"].endswith("dimension_clustering")
            assert {k: v["dimensions"] for k, v in bps["cluster"].items()} == {
                "step1_exposure": "exposure", "step1_visit": "visit"}
        assert bps["pipelineYaml"].endswith(f"#{step}")
        if site == "frdf":
            assert bps["wmsServiceClass"] == PANDA_WMS_SERVICE
            assert bps["computeSite"] == "CC-IN2P3" and bps["computeCloud"] == "EU"
            assert bps["queue"] == "CC-IN2P3_Rubin"
        elif site == "ukdf":  # the embedded campaign's UKDF submits through PanDA too (the local relay)
            assert bps["wmsServiceClass"] == PANDA_WMS_SERVICE and bps["computeSite"] == "LANCS"
        else:
            assert bps["wmsServiceClass"] == EMBEDDED_WMS_SERVICE
            assert "computeSite" not in yaml.safe_load(p.read_text())
        if step == "step1":
            q = bps[".payload.dataQuery"]
            ids = [int(x) for x in q.split("visit IN (")[1].rstrip(")").split(",")]
            assert ids == plan.group(step, site, g).ids
            seen_visits.setdefault(site, []).extend(ids)
    for site, ids in seen_visits.items():  # groups cover the site's visits exactly once
        assert sorted(ids) == plan.site_visits(site)
