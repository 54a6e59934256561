"""Plan a campaign: tract regions per site, whole visits per site, and every transfer.

Steps
-----
1. Partition the tracts (:mod:`.partition`): one contiguous region per site sized by
   its share of the coadd work.
2. Assign each whole visit to one site: the site whose region most of the visit's
   detectors overlap (so most of its PVIs stay home). Visits overlapping
   several regions ("boundary visits") are then moved between sites, cheapest first,
   until each site's detector-visits are within ``planner.share_tolerance`` of its share.
   ``planner.objective`` says what steps 1-2 count as a crossing: every PVI that moves
   (``all_crossings``, the default) or only those not sent to the hub (``hub_free``, the
   PVIs the metric below charges: DESIGN 55).
3. Derive transfers generically from the dataflow (:mod:`.dataflow`): for every step and
   every type in its ``requires``, where each needed dataset is held (the producing
   step's owner of that visit or tract, or the hub for global steps) and where it is
   needed (from the consuming step's sharding and the type's dimensions). Every type a
   step produces returns to the hub (what the campaign DAG does: the hub builds every
   later graph), so a later step at the hub needs no second transfer of them.

Quality metric
--------------
``cross_site_bytes``: the estimated bytes of every planned transfer except raws sent
to the site that processes them and outputs returned to the hub (both are the same for
any partition with the same shares). It includes bootstrap, overlap (PVIs to coadd
sites, tract catalogues to visit sites), gathers before and fan-outs after global steps.
A PVI is counted once per (visit, detector, site that needs it): a detector overlapping
two tracts of the same foreign site crosses once (:func:`.partition.site_affinity`, from
the inputs' shared-detector table). Inputs without that table (a parquet dataset written
before it) fall back to summing per (visit, tract), which counts such a detector once per
tract: an upper bound, 20-21% high on the DR1-sized benchmark survey (DESIGN 54).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from multisite_drp.crashpoints import crashpoint
from multisite_drp.errors import InputError

from .config import CampaignConfig, Sharding
from .dataflow import Dataflow, DataflowError, dataflow_from_pipeline, key_of
from .partition import components_per_site, exact_split, partition, site_affinity
from .plan import COMPLETE_FILE, CampaignPlan, GroupPlan, PlanMetrics, SitePlan, StepPlan, Transfer
from .spatial import SpatialInputs

__all__ = ["PlanError", "assign_visits", "load_inputs", "plan_campaign", "plan_to_directory"]

I64 = NDArray[np.int64]
METRIC_EXCLUDED = ("raw", "return")


class PlanError(InputError, ValueError):
    """The inputs cannot be planned as configured; the message names the input and the expectation."""


def assign_visits(inputs: SpatialInputs, tract_owner: I64, shares: list[float], tolerance: float,
                  active: NDArray[np.bool_], hub: int | None = None) -> I64:
    """Owner site per visit (-1 for inactive visits): majority region, then share balancing.

    Balancing moves boundary visits from the most over-full site to a site its visits
    touch, choosing first the visits whose move adds the fewest crossing PVIs per
    detector of work (cost = detectors overlapping the old region - detectors overlapping
    the new one, each detector once per region: :func:`.partition.site_affinity`). With
    ``hub`` (the ``hub_free`` objective, DESIGN 55) PVIs sent to the hub cost nothing, so
    the hub's region counts as overlapping no detector in that cost.
    """
    k = len(shares)
    aff = site_affinity(inputs, tract_owner, k)
    charged = aff  # the detectors a visit at each site keeps from crossing (counted by the objective)
    if hub is not None:
        charged = aff.copy()
        charged[:, hub] = 0.0
    owner = np.argmax(aff, axis=1).astype(np.int64)
    owner[~active] = -1
    work = inputs.visit_ndet.astype(float)
    total = work[active].sum()
    target = np.asarray(shares) * total
    tol = tolerance * total
    for _ in range(4 * k * k):
        load = np.bincount(owner[active], weights=work[active], minlength=k)
        excess = load - target
        if (np.abs(excess) <= tol).all():
            break
        moved = False
        for s in np.argsort(-excess):
            if excess[s] <= tol:
                break
            for r in np.argsort(excess):
                if r == s or excess[r] >= excess[s]:
                    continue
                cand = np.flatnonzero((owner == s) & (aff[:, r] > 0))
                if not len(cand):
                    continue
                cost = (charged[cand, s] - charged[cand, r]) / np.maximum(work[cand], 1)
                cand = cand[np.lexsort((inputs.visit_id[cand], cost))]
                # Move while it narrows the gap between s and r; with coarse visits (few visits per
                # site) move one if it lowers the larger of the two |excess| values.
                gap = (excess[s] - excess[r]) / 2.0
                if excess[r] < -tol:
                    gap = min(excess[s], -excess[r]) if excess[s] > tol else gap
                cum = np.cumsum(work[cand])
                n = int(np.searchsorted(cum, gap, side="right"))
                if n == 0:
                    w0 = work[cand[0]]
                    before = max(abs(excess[s]), abs(excess[r]))
                    if max(abs(excess[s] - w0), abs(excess[r] + w0)) >= before:
                        continue
                    n = 1
                owner[cand[:n]] = r
                moved = True
                break
            if moved:
                break
        if not moved:
            break
    return owner


def plan_campaign(config: CampaignConfig, inputs: SpatialInputs, method: str | None = None,
                  dataflow: Dataflow | None = None) -> CampaignPlan:
    """Plan ``config`` over ``inputs``; ``method`` overrides ``config.planner.method``."""
    inputs.validate()
    settings = config.planner
    method = method or settings.method.value
    sites = config.sites
    k = len(sites)
    shares = [s.share for s in sites]
    warnings: list[str] = []

    hub = [s.name for s in sites].index(config.hub.name) if settings.objective == "hub_free" else None
    tract_owner = partition(inputs, shares, method, seed=settings.seed, tolerance=settings.share_tolerance,
                            trials=settings.partition_trials, hub=hub)
    tract_work = inputs.tract_work()

    # Visits overlapping no tract.
    has_tract = np.bincount(inputs.ov_visit, minlength=inputs.n_visits) > 0
    orphans = np.flatnonzero(~has_tract)
    active = np.ones(inputs.n_visits, dtype=bool)
    if len(orphans):
        ids = inputs.visit_id[orphans]
        msg = (f"{inputs.source}: {len(ids)} visits overlap no tract of skymap {config.skymap!r} "
               f"(first: {ids[:10].tolist()})")
        if settings.orphan_visits == "error":
            raise PlanError(msg + "; expected every visit to overlap a tract (set planner.orphan_visits "
                            "to 'nearest' or 'drop' to plan them anyway)")
        if settings.orphan_visits == "drop":
            active[orphans] = False
            warnings.append(msg + ": left out of the plan (planner.orphan_visits=drop)")
        else:
            warnings.append(msg + ": each given to the site owning the nearest tract (no coadd uses them)")
    if not active.any():
        raise PlanError(f"{inputs.source}: empty selection: no visits left to plan; expected at least one")

    visit_owner = assign_visits(inputs, tract_owner, shares, settings.share_tolerance, active & has_tract, hub)
    if len(orphans) and settings.orphan_visits == "nearest":
        from .geometry import lonlat_to_xyz

        vx = lonlat_to_xyz(inputs.visit_ra[orphans], inputs.visit_dec[orphans])
        tx = lonlat_to_xyz(inputs.tract_ra, inputs.tract_dec)
        visit_owner[orphans] = tract_owner[np.argmax(vx @ tx.T, axis=1)]

    dataflow = dataflow if dataflow is not None else dataflow_from_pipeline(config)
    ctx = _Context(config, inputs, tract_owner, visit_owner, dataflow)
    transfers = ctx.transfers(warnings)

    # -- site summaries and metrics ------------------------------------------------------
    comps = components_per_site(inputs, tract_owner, k)
    vwork = inputs.visit_ndet.astype(np.int64)
    v_load = np.bincount(visit_owner[visit_owner >= 0], weights=vwork[visit_owner >= 0], minlength=k)
    t_load = np.bincount(tract_owner, weights=tract_work, minlength=k)
    v_share = v_load / max(v_load.sum(), 1)
    t_share = t_load / max(t_load.sum(), 1)
    site_plans = []
    for i, s in enumerate(sites):
        in_region = tract_owner == i
        site_plans.append(SitePlan(
            name=s.name, role=s.role.value, share_target=s.share,
            share_achieved=round(float(v_share[i]), 6), tract_share_achieved=round(float(t_share[i]), 6),
            detector_visits=int(v_load[i]), tract_work=int(t_load[i]),
            visits=sorted(inputs.visit_id[visit_owner == i].tolist()),
            tracts=sorted(inputs.tract_id[in_region & (tract_work > 0)].tolist()),
            empty_tracts=sorted(inputs.tract_id[in_region & (tract_work == 0)].tolist()),
            components=int(comps[i]),
        ))
    by_kind: dict[str, int] = {}
    by_link: dict[str, int] = {}
    for t in transfers:
        by_kind[t.kind] = by_kind.get(t.kind, 0) + t.bytes
        link = f"{t.source}->{t.destination}"
        by_link[link] = by_link.get(link, 0) + t.bytes
    target = np.asarray(shares)
    v_err = float(np.abs(v_share - target).max())
    t_err = float(np.abs(t_share - target).max())
    tol = settings.share_tolerance
    if max(v_err, t_err) > tol:  # never silent: what was achieved, against what, and why
        warnings.append(share_warning(inputs, sites, target, v_share, t_share, tol, method, settings))
    aff = site_affinity(inputs, tract_owner, k)
    boundary = int(((aff > 0).sum(axis=1) > 1).sum())
    metrics = PlanMetrics(
        cross_site_bytes=int(sum(t.bytes for t in transfers if t.kind not in METRIC_EXCLUDED)),
        overlap_bytes=int(by_kind.get("overlap", 0)),
        bytes_by_kind=dict(sorted(by_kind.items())), bytes_by_link=dict(sorted(by_link.items())),
        share_error=round(max(v_err, t_err), 6), visit_share_error=round(v_err, 6),
        tract_share_error=round(t_err, 6), connected=all(c == 1 for c in comps), boundary_visits=boundary,
    )
    return CampaignPlan(
        max_group_size=settings.max_group_size, groups=plan_groups(config, site_plans, inputs),
        campaign=config.name, method=method, instrument=config.instrument, skymap=config.skymap,
        campaign_query=config.data_query, inputs_source=inputs.source,
        n_visits=int(active.sum()), n_tracts=int(inputs.n_tracts), sites=site_plans,
        steps=[StepPlan(name=s.name, sharding=s.sharding.value, requires=list(s.requires)) for s in config.steps],
        transfers=transfers, orphan_visits=sorted(inputs.visit_id[orphans].tolist()), warnings=warnings,
        metrics=metrics,
    )


def share_warning(inputs: SpatialInputs, sites, target, v_share, t_share, tol: float, method: str,
                  settings) -> str:
    """The plan's warning when a share is outside ``planner.share_tolerance``: the shares achieved
    (of detector-visits, which whole visits carry, and of coadd work, which whole tracts carry)
    against their targets, and why no better split was found."""
    achieved = ", ".join(f"{s.name} {v_share[i]:.3f} of detector-visits and {t_share[i]:.3f} of coadd work "
                         f"(target {target[i]:.3f})" for i, s in enumerate(sites))
    v_err, t_err = float(np.abs(v_share - target).max()), float(np.abs(t_share - target).max())
    why = []
    if t_err > tol:
        exact = exact_split(inputs, [s.share for s in sites], tol) if method == "graph" else None
        if exact is not None:
            why.append(f"no contiguous split of the {exact.tracts} tracts comes within it: the best of all "
                       f"{exact.splits} reaches {exact.best_error:.4f} (exact enumeration; this plan uses it)")
        else:
            why.append(f"method {method!r} found no balanced contiguous split of the {inputs.n_tracts} tracts "
                       f"({settings.partition_trials} trials)")
    if v_err > tol:
        ndet = inputs.visit_ndet
        why.append(f"visits go whole to one site: one visit is up to {ndet.max() / max(ndet.sum(), 1):.3f} of the "
                   f"detector-visits ({inputs.n_visits} visits)")
    reason = "; ".join(why)
    return (f"shares outside planner.share_tolerance {tol} (error {max(v_err, t_err):.4f}): {achieved}. "
            f"{reason[:1].upper()}{reason[1:]}. Widen planner.share_tolerance, or plan a finer sky, to meet it")


def plan_groups(config: CampaignConfig, site_plans: list[SitePlan], inputs: SpatialInputs | None) -> list[GroupPlan]:
    """Every (step, site) split into submission groups of at most the step's ``max_group_size``
    (default ``planner.max_group_size``) quanta-equivalents (:mod:`.grouping`); a global step
    is one group at the hub."""
    from .grouping import (
        group_label_text,
        main_tracts,
        tract_weights,
        visit_order,
        visit_weights,
    )

    hub = next(p.name for p in site_plans if p.role == "hub")
    main = main_tracts(inputs) if inputs is not None else None  # once: one sort of the overlap table
    out: list[GroupPlan] = []
    for st in config.steps:
        max_size = st.max_group_size or config.planner.max_group_size
        for sp in site_plans:
            if st.sharding.value == "global":
                if sp.name == hub:
                    out.append(GroupPlan(step=st.name, site=sp.name, group=0, dimension="", ids=[],
                                         weight=max(sp.detector_visits, 1), label=group_label_text("", [])))
                continue
            if st.sharding.value == "visit":
                dim, ids = "visit", visit_order(sp.visits, inputs, main)
                weights = visit_weights(ids, inputs)
            else:
                dim, ids = "tract", sorted(sp.tracts)
                weights = tract_weights(ids, inputs)
            out.extend(split_groups(st.name, sp.name, dim, ids, weights, max_size))
    return out


def split_groups(step: str, site: str, dimension: str, ids: list[int], weights: list[int],
                 max_size: int) -> list[GroupPlan]:
    """``ids`` (in the order groups follow) split into consecutive groups of at most
    ``max_size`` by ``weights`` (:func:`.grouping.split_weighted`), numbered from 0."""
    from .grouping import group_label_text, split_weighted

    weight_of = dict(zip(ids, weights, strict=True))
    out = []
    for g, gids in enumerate(split_weighted(ids, weights, max_size) if ids else []):
        gids = sorted(gids)
        out.append(GroupPlan(step=step, site=site, group=g, dimension=dimension, ids=gids,
                             weight=sum(weight_of[i] for i in gids), label=group_label_text(dimension, gids)))
    return out


class _Context:
    """Arrays shared by the transfer derivation of every step."""

    def __init__(self, config: CampaignConfig, inputs: SpatialInputs, tract_owner: I64, visit_owner: I64,
                 dataflow: Dataflow) -> None:
        self.config = config
        self.inputs = inputs
        self.t_own = tract_owner
        self.v_own = visit_owner
        self.flow = dataflow
        self.names = [s.name for s in config.sites]
        self.hub = self.names.index(config.hub.name)
        self.k = len(self.names)
        self.t_work = inputs.tract_work()
        # Detectors of each visit overlapping each site's region, once per (detector, site).
        self.aff = site_affinity(inputs, tract_owner, self.k)
        # Bands per tract (for band-dimensioned tract products such as coadds).
        bands, bcode = np.unique(inputs.visit_band, return_inverse=True)
        key = np.unique(inputs.ov_tract * len(bands) + bcode[inputs.ov_visit])
        self.t_bands = np.bincount(key // len(bands), minlength=inputs.n_tracts)
        self.t_patches = np.maximum(inputs.tract_npatch, 1)

    # -- sizes -------------------------------------------------------------------------------

    def nbytes(self, dataset_type: str, count: int) -> int:
        per = self.config.planner.dataset_bytes.get(dataset_type, self.config.planner.default_dataset_bytes)
        return int(per) * int(count)

    def tract_count(self, dims: frozenset[str], tracts: I64) -> int:
        mult = np.ones(len(tracts), dtype=np.int64)
        if "patch" in dims:
            mult *= self.t_patches[tracts]
        if "band" in dims:
            mult *= np.maximum(self.t_bands[tracts], 1)
        return int(mult.sum())

    # -- what is needed where ----------------------------------------------------------------

    def needed_visits(self, sharding: Sharding, site: int) -> tuple[I64, I64]:
        """(visit indices, detectors needed per visit) at ``site`` for a step of ``sharding``.

        A tract step needs each detector overlapping the site's region once, however many
        of its tracts the detector overlaps."""
        inp = self.inputs
        if sharding is Sharding.global_:
            v = np.flatnonzero(self.v_own >= 0)
            return v, inp.visit_ndet[v].astype(np.int64)
        if sharding is Sharding.visit:
            v = np.flatnonzero(self.v_own == site)
            return v, inp.visit_ndet[v].astype(np.int64)
        det = np.where(self.v_own >= 0, self.aff[:, site], 0).astype(np.int64)
        v = np.flatnonzero(det > 0)
        return v, det[v]

    def needed_tracts(self, sharding: Sharding, site: int) -> I64:
        inp = self.inputs
        if sharding is Sharding.global_:
            return np.flatnonzero(self.t_work > 0)
        if sharding is Sharding.tract:
            return np.flatnonzero((self.t_own == site) & (self.t_work > 0))
        rows = self.v_own[inp.ov_visit] == site
        return np.unique(inp.ov_tract[rows])

    # -- derivation --------------------------------------------------------------------------

    def _emit(self, out: list[Transfer], step: str, dtype: str, src: int, dst: int, kind: str,
              visits: I64 | None = None, tracts: I64 | None = None, count: int = 1) -> None:
        if src == dst or count <= 0:
            return
        out.append(Transfer(
            step=step, dataset_type=dtype, source=self.names[src], destination=self.names[dst], kind=kind,
            visits=sorted(self.inputs.visit_id[visits].tolist()) if visits is not None else [],
            tracts=sorted(self.inputs.tract_id[tracts].tolist()) if tracts is not None else [],
            count=int(count), bytes=self.nbytes(dtype, count)))

    def transfers(self, warnings: list[str]) -> list[Transfer]:
        cfg, flow = self.config, self.flow
        out: list[Transfer] = []
        steps = cfg.steps
        first = steps[0].name
        boot = set(flow.bootstrap_types())
        for st in steps:
            for dtype in st.requires:
                if flow.producer(st.name, dtype) is None and flow.dimensions(dtype) is not None \
                        and key_of(flow.dimensions(dtype)) != "visit":
                    boot.add(dtype)
        for dtype in sorted(boot):
            for i in range(self.k):
                self._emit(out, first, dtype, self.hub, i, "bootstrap", count=1)
        for si, st in enumerate(steps):
            io = flow.steps[flow.step_index(st.name)]
            for dtype in sorted(set(io.consumes) - set(st.requires)):
                pidx = flow.producer(st.name, dtype)
                if pidx is None:
                    continue
                prod = self.config.step(flow.steps[pidx].name)
                # Only a type made under another sharding (or at the hub) lives elsewhere.
                if prod.sharding is not st.sharding or (prod.is_global and not st.is_global):
                    warnings.append(f"step {st.name} consumes {dtype} (made by an earlier step) but it is not in "
                                    f"steps[{st.name}].requires: no transfer planned for it")
            for dtype in st.requires:
                self._step_type(out, st, dtype)
            for dtype in self.returned_types(st):
                self._returns(out, st, dtype)
        out.sort(key=lambda t: ([s.name for s in steps].index(t.step), t.kind, t.dataset_type, t.source,
                                t.destination))
        return out

    def _step_type(self, out: list[Transfer], st, dtype: str) -> None:
        flow = self.flow
        dims = flow.dimensions(dtype)
        if dims is None:
            raise DataflowError(
                f"{self.config.source_path}: steps ({st.name}).requires: {dtype!r} is neither produced by an "
                "earlier step nor an input of the pipeline; expected a dataset type of the pipeline")
        key = key_of(dims)
        pidx = flow.producer(st.name, dtype)
        dests = [self.hub] if st.is_global else list(range(self.k))
        if pidx is None:
            if key != "visit":
                return  # bootstrap, planned once before the first step
            for x in dests:
                site = self.config.sites[x]
                if x == self.hub or site.holds_all_raws:
                    continue
                v, det = self.needed_visits(st.sharding, x)
                src = self.hub
                self._emit(out, st.name, dtype, src, x, "raw", visits=v,
                           count=int(det.sum()) if "detector" in dims else len(v))
            return
        producer = self.config.step(flow.steps[pidx].name)
        kind = "gather" if st.is_global else ("fanout" if producer.is_global else "overlap")
        if self.returned(producer, dtype):
            dests = [x for x in dests if x != self.hub]  # already at the hub
        for x in dests:
            if key == "visit":
                v, det = self.needed_visits(st.sharding, x)
                holder = np.full(len(v), self.hub) if producer.is_global else self.v_own[v]
                for h in range(self.k):
                    sel = holder == h
                    if h == x or not sel.any():
                        continue
                    cnt = int(det[sel].sum()) if "detector" in dims else int(sel.sum())
                    self._emit(out, st.name, dtype, h, x, kind, visits=v[sel], count=cnt)
            elif key == "tract":
                t = self.needed_tracts(st.sharding, x)
                holder = np.full(len(t), self.hub) if producer.is_global else self.t_own[t]
                for h in range(self.k):
                    sel = holder == h
                    if h == x or not sel.any():
                        continue
                    self._emit(out, st.name, dtype, h, x, kind, tracts=t[sel], count=self.tract_count(dims, t[sel]))
            else:
                holders = [self.hub] if producer.is_global else list(range(self.k))
                for h in holders:
                    self._emit(out, st.name, dtype, h, x, kind, count=1)

    def returned(self, step, dtype: str) -> bool:
        """True if ``step``'s outputs of ``dtype`` are at the hub: every output returns there."""
        return True

    def returned_types(self, step) -> list[str]:
        return sorted(self.flow.steps[self.flow.step_index(step.name)].produces)

    def _returns(self, out: list[Transfer], st, dtype: str) -> None:
        if st.is_global:
            return
        io = self.flow.steps[self.flow.step_index(st.name)]
        dims = io.produces.get(dtype) or self.flow.dimensions(dtype) or frozenset()
        key = key_of(dims)
        for x in range(self.k):
            if x == self.hub:
                continue
            if key == "visit":
                v = np.flatnonzero(self.v_own == x) if st.sharding is Sharding.visit else \
                    self.needed_visits(Sharding.tract, x)[0]
                cnt = int(self.inputs.visit_ndet[v].sum()) if "detector" in dims else len(v)
                self._emit(out, st.name, dtype, x, self.hub, "return", visits=v, count=cnt)
            elif key == "tract":
                t = np.flatnonzero((self.t_own == x) & (self.t_work > 0)) if st.sharding is Sharding.tract \
                    else self.needed_tracts(Sharding.visit, x)
                self._emit(out, st.name, dtype, x, self.hub, "return", tracts=t, count=self.tract_count(dims, t))
            else:
                self._emit(out, st.name, dtype, x, self.hub, "return", count=1)


def load_inputs(config: CampaignConfig, parquet: str | None = None, where: str | None = None) -> SpatialInputs:
    """Spatial inputs for ``config``: a parquet dataset if given, else the hub's butler registry."""
    from .spatial import from_butler, from_parquet

    if parquet:
        return from_parquet(parquet)
    return from_butler(config.repo_of(config.hub), config.instrument, config.skymap,
                       where=config.data_query if where is None else where)


def plan_to_directory(config: CampaignConfig, out_dir: str | Path, *, inputs: SpatialInputs | None = None,
                      parquet: str | None = None, method: str | None = None, dataflow: Dataflow | None = None,
                      generation: int = 0, baselines: bool = True) -> CampaignPlan:
    """Plan and write everything the campaign DAG reads: the function the DAG calls.

    ``out_dir`` receives ``plan.json`` (:meth:`CampaignPlan.load`), ``bps/{step}/{site}/group{NNN}.yaml``,
    ``report.json``, ``plan.md``, ``skymap.png`` and ``tracts.json``. With ``baselines`` the RA-stripes and
    round-robin plans of the same inputs are computed for the report's comparison.

    All of it is written into ``.{name}.partial-{pid}`` beside ``out_dir``, closed with a
    ``COMPLETE`` marker, and renamed to ``out_dir`` whole (an earlier ``out_dir`` is
    replaced): a crash at any line leaves either no plan or the whole plan, never part
    of one. Partial directories of stopped writers are removed on the next call (one
    writer per plan directory at a time, as the DAG runs one plan task per generation).
    """
    from .plan_report import write_report

    inputs = inputs if inputs is not None else load_inputs(config, parquet)
    dataflow = dataflow if dataflow is not None else dataflow_from_pipeline(config)
    plan = plan_campaign(config, inputs, method, dataflow)

    def report(tmp: Path) -> None:
        base = {}
        if baselines:
            for m in ("ra_stripes", "round_robin"):
                if m != plan.method:
                    base[m] = plan_campaign(config, inputs, m, dataflow)
        write_report(plan, inputs, tmp, base)

    return publish_plan(config, plan, out_dir, generation=generation, extra=report)


def publish_plan(config: CampaignConfig, plan: CampaignPlan, out_dir: str | Path, *, generation: int = 0,
                 extra=None) -> CampaignPlan:
    """Write ``plan`` (``plan.json``, the BPS configs, whatever ``extra(tmp)`` adds) into
    ``out_dir`` atomically: see :func:`plan_to_directory`."""
    from .bps_config import write_bps_configs

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    plan.save(tmp)
    crashpoint("plan.after_plan_json")
    write_bps_configs(config, plan, tmp, generation=generation)
    crashpoint("plan.after_bps")
    if extra is not None:
        extra(tmp)
    _mark_complete(tmp, generation)
    crashpoint("plan.before_publish")
    _publish(tmp, out)
    return plan


def night_plan(night_config: CampaignConfig, plan: CampaignPlan, assignment: dict,
               detectors: dict[int, int]) -> CampaignPlan:
    """One night's step-1 plan (``drp_nightly`` with ``run_step1``), derived from the
    generation's ``plan`` without planning again: the same sites and tract regions, each
    site's visits those the night's ``assignment`` gives it (``services.nightly``: written
    once, never moved), no transfers (a group's missing inputs are replicated by its own
    chain), and the step split into groups as the campaign splits it (visits ordered by home
    tract then id, weighed by their detectors, at most the step's ``max_group_size``).
    ``night_config`` is ``names.night_config`` of the campaign: its one step is the step."""
    step = night_config.steps[0]
    max_size = step.max_group_size or night_config.planner.max_group_size
    by_site: dict[str, list[int]] = {}
    home = {}
    for visit, a in assignment["visits"].items():
        by_site.setdefault(a["site"], []).append(int(visit))
        home[int(visit)] = int(a["tract"])
    missing = sorted(v for v in home if v not in detectors)
    if missing:
        raise ValueError(f"night {assignment['day_obs']}: no detector count for visits {missing[:10]}")
    unknown = sorted(set(by_site) - {sp.name for sp in plan.sites})
    if unknown:
        raise ValueError(f"night {assignment['day_obs']}: the assignment names sites {unknown} the plan lacks")
    sites, groups = [], []
    for sp in plan.sites:
        visits = sorted(by_site.get(sp.name, []), key=lambda v: (home[v], v))
        sites.append(sp.model_copy(update={"visits": sorted(visits),
                                           "detector_visits": sum(detectors[v] for v in visits)}))
        groups.extend(split_groups(step.name, sp.name, "visit", visits, [detectors[v] for v in visits], max_size))
    return plan.model_copy(update={
        "campaign": night_config.name, "n_visits": len(home), "sites": sites, "steps": [plan.step(step.name)],
        "transfers": [], "orphan_visits": [], "warnings": [], "max_group_size": max_size, "groups": groups})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mark_complete(directory: Path, generation: int) -> None:
    """Write the ``COMPLETE`` marker (the list of the directory's files) last, durably."""
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    for f in files:
        with open(directory / f, "rb") as fh:
            os.fsync(fh.fileno())
    marker = directory / COMPLETE_FILE
    with open(marker, "w") as fh:
        json.dump({"generation": generation, "files": files}, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(directory)


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
