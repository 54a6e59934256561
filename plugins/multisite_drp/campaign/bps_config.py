"""Per-site, per-step BPS submit YAML written from the plan.

One file per submission group of the plan (:mod:`.grouping`, ``CampaignPlan.groups``):
``DIR/bps/{step}/{site}/group{NNN}.yaml``. A group is bounded by
``planner.max_group_size`` quanta-equivalents, as lsst-dm/cm-service's splitters bound
theirs, so that one workflow stays within what the workflow system handles (about 100k
jobs per iDDS workflow).

Each file is a complete submit YAML that ``lsst.ctrl.bps.BpsConfig`` loads: the
pipeline subset, and a ``payload`` with the site's butler, the input collections, the
group's ``dataQuery``, and the deterministic names the DAG's tasks use for that group
(:mod:`.names`: ``output`` the step's chain at the site, ``outputRun``
``.../g{generation}/group{NNN}``, ``submitPath``, ``uniqProcName`` the request name), so
the PanDA adapter submits this very file.
Quanta are clustered into jobs by ``planner.cluster_by`` (default: one job per visit, or
per tract, as DRP submissions do) with ctrl_bps's own ``dimension_clustering``. PanDA sites get ``computeSite``,
``computeCloud``, ``queue`` and the PanDA service class; local (embedded) sites get
:data:`EMBEDDED_WMS_SERVICE`. What belongs to a site's deployment rather than to the plan
(``qgraphFile``: the hub-built graph; the final job's merge command; the edge node's
``runnerCommand``; ``fileDistributionEndPoint``) the workflow adapter adds at submission.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from . import names
from .config import CampaignConfig
from .plan import CampaignPlan, GroupPlan

__all__ = ["EMBEDDED_WMS_SERVICE", "PANDA_WMS_SERVICE", "bps_document", "clustering", "write_bps_configs"]

PANDA_WMS_SERVICE = "lsst.ctrl.bps.panda.PanDAService"
# Placeholder for the embedded workflow service (replaced by the services layer's class).
EMBEDDED_WMS_SERVICE = "multisite_drp.services.workflow.embedded.EmbeddedWmsService"
LOCAL_COMPUTE_SITE = "local"
DIMENSION_CLUSTERING = "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"


def clustering(config: CampaignConfig, step: str) -> dict:
    """BPS clustering keys for a step: each task of the subset goes into the cluster of the
    first of ``planner.cluster_by[sharding]`` it has (default: ``visit``, else ``exposure``;
    or ``tract``), one job per value of it; the rest (and global steps) keep ctrl_bps's
    default of one quantum per job."""
    st = config.step(step)
    dims = config.planner.cluster_by.get(st.sharding.value)
    if dims is None:
        return {}
    from lsst.pipe.base import Pipeline  # lazy: pipe_base is heavy

    graph = Pipeline.from_uri(f"{config.pipeline_path}#{st.subset}").to_graph()
    clusters: dict[str, list[str]] = {}
    for label, node in graph.tasks.items():
        dim = next((d for d in dims if d in node.raw_dimensions), None)
        if dim is not None:
            clusters.setdefault(dim, []).append(label)
    if not clusters:
        return {}
    return {"clusterAlgorithm": DIMENSION_CLUSTERING,
            "cluster": {f"{step}_{dim}": {"pipetasks": ",".join(labels), "dimensions": dim}
                        for dim, labels in clusters.items()}}


def bps_document(config: CampaignConfig, plan: CampaignPlan, group: GroupPlan, generation: int = 0,
                 cluster: dict | None = None) -> dict:
    """The submit YAML of one group as a plain mapping."""
    step, site, g = group.step, group.site, group.group
    st = config.step(step)
    s = config.site(site)
    query = plan.group_query(step, site, g)
    doc: dict = {
        "project": config.name,
        "campaign": f"{config.name}/{step}",
        "pipelineYaml": f"{config.pipeline_path}#{st.subset}",
        "operator": "multisite-drp",
        "payload": {
            "payloadName": names.workflow_name(config, step, site, generation, g),
            "butlerConfig": config.repo_of(site),
            "inCollection": ",".join(config.input_collections),
            "dataQuery": query,
            "output": names.output_chain(config, step, site),
            "outputRun": names.output_run(config, step, site, generation, g),
        },
        "submitPath": str(names.submit_dir(config, step, site, generation, g)),
        # The PanDA request name; deterministic, so a retried submission finds its request.
        "uniqProcName": names.workflow_name(config, step, site, generation, g),
        **(cluster or {}),
    }
    if s.compute_site == LOCAL_COMPUTE_SITE:
        doc["wmsServiceClass"] = EMBEDDED_WMS_SERVICE
    else:
        doc["wmsServiceClass"] = PANDA_WMS_SERVICE
        doc["computeSite"] = s.compute_site
        if s.compute_cloud:
            doc["computeCloud"] = s.compute_cloud
        if s.queue:
            doc["queue"] = s.queue
    return doc


def write_bps_configs(config: CampaignConfig, plan: CampaignPlan, out_dir: str | os.PathLike[str],
                      generation: int = 0) -> list[Path]:
    """Write every (step, site, group) submit YAML of the plan under ``out_dir/bps``; return the paths."""
    root = Path(out_dir) / "bps"
    written: list[Path] = []
    for st in config.steps:
        cluster = clustering(config, st.name)  # once per step: it loads the pipeline
        for site in plan.sites_for(st.name):
            groups = plan.groups_for(st.name, site)
            d = root / st.name / site
            d.mkdir(parents=True, exist_ok=True)
            for old in d.glob("group*.yaml"):
                old.unlink()
            for group in groups:
                doc = bps_document(config, plan, group, generation, cluster)
                header = (f"# BPS submit file written by the campaign planner: campaign {config.name}, "
                          f"step {st.name}, site {site}, group {group.group + 1} of {len(groups)}: {group.label}, "
                          f"{group.weight} quanta-equivalents.\n")
                path = d / f"{names.group_label(group.group)}.yaml"
                path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=10**9))
                written.append(path)
    return written
