"""Per-site, per-step BPS submit YAML written from the plan.

One file per submission group: ``DIR/bps/{step}/{site}/group{NNN}.yaml``. A site's
selection for a step (its visits or its tracts) is split into groups of at most
``planner.max_group_size`` data IDs, as lsst-dm/cm-service's splitters do, so that one
workflow stays within what the workflow system handles (about 100k jobs per iDDS
workflow). Visits are ordered by the tract that holds most of their detectors, then id,
so a group covers a compact piece of sky; tracts in id order (rings are sky order).

Each file is a complete submit YAML that ``lsst.ctrl.bps.BpsConfig`` loads: the
pipeline subset, and a ``payload`` with the site's butler, the input collections, the
group's ``dataQuery``, and deterministic ``output`` / ``outputRun`` / ``submitPath`` names
from :mod:`.names`. When a (step, site) has a single group, the names are exactly the
ones the DAG's tasks use (``output_run(step, site, generation)``, no group suffix), so the
PanDA adapter submits this very file; with several groups each gets its group form.
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

import numpy as np
import yaml

from . import names
from .config import CampaignConfig
from .plan import CampaignPlan, id_query
from .spatial import SpatialInputs

__all__ = ["EMBEDDED_WMS_SERVICE", "PANDA_WMS_SERVICE", "clustering", "group_ids", "write_bps_configs"]

PANDA_WMS_SERVICE = "lsst.ctrl.bps.panda.PanDAService"
# Placeholder for the embedded workflow service (replaced by the services layer's class).
EMBEDDED_WMS_SERVICE = "multisite_drp.services.workflow.embedded.EmbeddedWmsService"
LOCAL_COMPUTE_SITE = "local"
DIMENSION_CLUSTERING = "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"


def group_ids(ids: list[int], max_size: int) -> list[list[int]]:
    """Split ``ids`` (already in the wanted order) into consecutive groups of at most ``max_size``.

    Groups are as equal as possible (sizes differ by at most one) so no small tail group
    is left over.
    """
    if max_size <= 0:
        raise ValueError(f"max_group_size: expected > 0, got {max_size}")
    if not ids:
        return []
    n = -(-len(ids) // max_size)
    bounds = np.linspace(0, len(ids), n + 1).round().astype(int)
    return [ids[bounds[i]:bounds[i + 1]] for i in range(n)]


def _visit_order(plan_visits: list[int], inputs: SpatialInputs | None) -> list[int]:
    """Visits sorted by their main tract, then id (compact groups on the sky)."""
    if inputs is None or not plan_visits:
        return sorted(plan_visits)
    vidx = inputs.visit_index(np.asarray(plan_visits, dtype=np.int64))
    main = np.full(inputs.n_visits, np.iinfo(np.int64).max, dtype=np.int64)
    order = np.lexsort((-inputs.ov_ndet, inputs.ov_visit))
    first = np.ones(len(order), dtype=bool)
    first[1:] = inputs.ov_visit[order][1:] != inputs.ov_visit[order][:-1]
    main[inputs.ov_visit[order][first]] = inputs.tract_id[inputs.ov_tract[order][first]]
    keys = np.lexsort((inputs.visit_id[vidx], main[vidx]))
    return inputs.visit_id[vidx][keys].tolist()


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


def bps_document(config: CampaignConfig, plan: CampaignPlan, step: str, site: str, group: int | None,
                 ids: list[int] | None, generation: int = 0, cluster: dict | None = None) -> dict:
    """The submit YAML for one group as a plain mapping (``group`` None: the only group)."""
    st = config.step(step)
    s = config.site(site)
    dim, _ = plan.ids_for(step, site)
    query = id_query(dim, ids or [], config.data_query) if dim else config.data_query
    label = names.group_label(group if group is not None else 0)
    doc: dict = {
        "project": config.name,
        "campaign": f"{config.name}/{step}",
        "pipelineYaml": f"{config.pipeline_path}#{st.subset}",
        "operator": "multisite-drp",
        "payload": {
            "payloadName": f"{names.workflow_name(config, step, site, generation)}_{label}",
            "butlerConfig": config.repo_of(site),
            "inCollection": ",".join(config.input_collections),
            "dataQuery": query,
            "output": names.output_chain(config, step, site),
            "outputRun": names.output_run(config, step, site, generation, group),
        },
        "submitPath": str(names.submit_dir(config, step, site, generation, group)),
        # The PanDA request name; deterministic, so a retried submission finds its request.
        "uniqProcName": names.workflow_name(config, step, site, generation)
        + ("" if group is None else f"_{label}"),
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
                      inputs: SpatialInputs | None = None, generation: int = 0) -> list[Path]:
    """Write every (step, site, group) submit YAML under ``out_dir/bps``; return the paths."""
    root = Path(out_dir) / "bps"
    written: list[Path] = []
    max_size = config.planner.max_group_size
    for st in config.steps:
        cluster = clustering(config, st.name)  # once per step: it loads the pipeline
        for site in plan.sites_for(st.name):
            dim, ids = plan.ids_for(st.name, site)
            if dim == "visit":
                groups = [sorted(g) for g in group_ids(_visit_order(ids, inputs), max_size)]
            elif dim == "tract":
                groups = group_ids(sorted(ids), max_size)
            else:
                groups = [None]  # type: ignore[list-item]
            d = root / st.name / site
            d.mkdir(parents=True, exist_ok=True)
            for old in d.glob("group*.yaml"):
                old.unlink()
            for g, gids in enumerate(groups):
                doc = bps_document(config, plan, st.name, site, g if len(groups) > 1 else None, gids, generation,
                                   cluster)
                header = (f"# BPS submit file written by the campaign planner: campaign {config.name}, "
                          f"step {st.name}, site {site}, group {g + 1} of {len(groups)}"
                          + (f" ({len(gids)} {dim}s)" if gids else "") + ".\n")
                path = d / f"{names.group_label(g)}.yaml"
                path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=10**9))
                written.append(path)
    return written
