"""Campaign planner at Data Release 1 scale: figures, not a timed test.

Usage: ``.venv/bin/python bench/planner_scale.py [--visits N] [--small-visits M] [--objective hub_free]``
(with ``PYTHONPATH=plugins`` or run from the repo root; the script adds ``plugins``).

1. Builds a synthetic LSST-like survey: a full-sky rings skymap like LSST's (~18,900
   tracts), N visits (default 190,000) of a 189-detector focal plane drawn from a southern
   footprint with sparser Galactic-plane coverage, and the exact (visit, tract, detectors)
   overlap table streamed through the vectorised polygon test. Written as a parquet
   dataset. This input preparation is timed separately: in production it is the butler
   read (or a stored parquet) and happens once.
2. Plans from the parquet dataset (load, partition, visit assignment, transfers, BPS
   files, report with sky map): the "seconds" of the last line, with the process's peak
   RSS.
3. Plans the same inputs with the two baselines (RA stripes, round-robin tracts) and
   prints the cross-site volume of each. ``--objective`` sets ``planner.objective`` for
   all three (DESIGN 55); with ``hub_free`` the graph plan is also compared with RA
   stripes as the default objective assigns their visits.
4. At a smaller scale (M visits, default 150), inserts the same kind of survey into a
   scratch butler repository and reads the spatial inputs twice: through the registry's
   own spatial join (``overlaps="registry"``) and through the planner's path (regions read
   from the registry, overlaps by the vectorised test); prints both times, their ratio
   and whether the overlap tables and the plans agree.

5. Against the exact oracle (``partition.exact_split``: every contiguous split of a
   small sky): ``--oracle-skies`` seeded random skies of 6 to 12 tracts, 2 or 3 sites
   (the layouts of ``tests/campaign``), split by the METIS path (enumeration off, as for
   DR1-sized skies); prints how often it meets the tolerance where a split can, and its
   cost over the optimum at the median, p90 and worst.

6. Against KaHyPar (optional: ``pip install kahypar``, GPL-3, not a project dependency;
   it needs one of its own preset files, ``--kahypar-ini`` or ``$KAHYPAR_INI``, e.g. its
   ``config/km1_kKaHyPar_sea20.ini``): a hypergraph with a vertex per tract (weight = its
   coadd work) and a hyperedge per visit over the tracts it overlaps (weight = the visit's
   detectors), split into the sites with the shares as maximum block weights (3 % over),
   minimising connectivity - 1. Its split then goes through the graph method's own
   contiguity repair, balancing and refinement on the true objective
   (``partition.repair_and_refine``); prints its crossing PVIs before and after, and ours
   over its (``vs_kahypar``; ``na`` when kahypar or the preset file is missing).

The last line is
``planner: visits=N seconds=S peak_gb=G transfer_ratio_vs_stripes=R share_error=E connected=yes|no
oracle_p90=Q vs_kahypar=K``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from multisite_drp.campaign import synthetic
from multisite_drp.campaign.config import CampaignConfig
from multisite_drp.campaign.dataflow import dataflow_from_mapping
from multisite_drp.campaign.planner import METRIC_EXCLUDED, plan_campaign, plan_to_directory
from multisite_drp.campaign.spatial import from_butler, from_parquet, to_parquet

MB = 1_000_000
# Rough DP1/DRP-like per-dataset sizes (bytes); the metric's absolute value depends on them.
DATASET_BYTES = {
    "raw": 40 * MB, "pvi": 110 * MB, "src": 15 * MB, "sourceTable_visit": 60 * MB, "visitSummary": 1 * MB,
    "photoCalib": 1 * MB, "deepCoadd": 250 * MB, "deepCoadd_meas": 60 * MB, "objectTable_tract": 3000 * MB,
    "forcedSource": 8 * MB, "forcedSourceTable_visit": 150 * MB, "surveySummary": 10 * MB,
    "bias": 2000 * MB, "flat": 20000 * MB, "refcat": 500_000 * MB, "skyMap": 10 * MB,
}


def production_like_config(work: Path, max_group: int = 50_000) -> CampaignConfig:
    """A three-DF campaign shaped like DMTN-213 (shares, raw holdings, PanDA sites)."""
    conns = lambda s: {"butler": f"drp_{s}_butler", "replica": f"drp_{s}_replica", "workflow": f"drp_{s}_workflow"}
    step = lambda n, sh, req: {"name": n, "subset": n, "sharding": sh, "requires": list(req)}
    data = {
        "name": "bench", "pipeline": str(work / "pipeline.yaml"), "instrument": "LSSTCam", "skymap": "lsst_cells_v1",
        "input_collections": ["LSSTCam/defaults"], "data_query": "instrument = 'LSSTCam' AND skymap = 'lsst_cells_v1'",
        "output_prefix": "LSSTCam/runs/DRP/bench", "data_root": str(work), "rate_target": {"quanta_per_hour": 1e6},
        "replication": {"scope": "drp_bench"},
        # No BPS clustering: the placeholder pipeline has no tasks to cluster (the dataflow is a mapping).
        "planner": {"method": "graph", "dataset_bytes": DATASET_BYTES, "max_group_size": max_group, "cluster_by": {}},
        "sites": [
            {"name": "usdf", "role": "hub", "butler_repo": "s3://usdf/repo", "rse": "SLAC_BUTLER_DISK",
             "compute_site": "SLAC", "compute_cloud": "US", "queue": "SLAC_Rubin", "share": 0.35,
             "holds_all_raws": True, "connections": conns("usdf")},
            {"name": "frdf", "role": "remote", "butler_repo": "s3://frdf/repo", "rse": "IN2P3_BUTLER_DISK",
             "compute_site": "CC-IN2P3", "compute_cloud": "EU", "queue": "CC-IN2P3_Rubin", "share": 0.40,
             "holds_all_raws": True, "connections": conns("frdf")},
            {"name": "ukdf", "role": "remote", "butler_repo": "s3://ukdf/repo", "rse": "LANCS_BUTLER_DISK",
             "compute_site": "LANCS", "compute_cloud": "EU", "queue": "LANCS_Rubin", "share": 0.25,
             "connections": conns("ukdf")},
        ],
        "steps": [
            step("step1", "visit", ["raw"]),
            step("step2", "visit", ["src"]),
            step("step3", "global", ["sourceTable_visit"]),
            step("step4", "tract", ["pvi", "photoCalib"]),
            step("step5", "tract", ["deepCoadd"]),
            step("step6", "tract", []),
            step("step7", "visit", ["objectTable_tract", "photoCalib"]),
            step("step8", "visit", []),
            step("step9", "global", ["forcedSourceTable_visit"]),
        ],
    }
    return CampaignConfig.model_validate(data)


def pair_volumes(plan) -> str:
    """The metric's TB between each pair of sites, both directions: where the boundaries cost."""
    pairs: dict[str, int] = {}
    for t in plan.transfers:
        if t.kind not in METRIC_EXCLUDED:
            key = "|".join(sorted((t.source, t.destination)))
            pairs[key] = pairs.get(key, 0) + t.bytes
    return ", ".join(f"{k} {v / 1e12:.2f} TB" for k, v in sorted(pairs.items()))


def crossing_counts(inputs, plan) -> tuple[int, int]:
    """The plan's crossing PVIs counted exactly (once per visit, detector and site) and as the
    old per-(visit, tract) sum (a detector on two tracts of one site counted twice)."""
    import dataclasses

    from multisite_drp.campaign.partition import crossing_work

    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    for i, s in enumerate(plan.sites):
        owner[inputs.tract_index(np.asarray(s.tracts + s.empty_tracts, dtype=np.int64))] = i
    per_tract = dataclasses.replace(inputs, multi_visit=None, multi_ndet=None, multi_set=None, multi_tract=None)
    k = len(plan.sites)
    return crossing_work(inputs, owner, k), crossing_work(per_tract, owner, k)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: /proc/self/clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def hwm_gb() -> float:
    """Peak RSS since the last :func:`reset_hwm` (VmHWM), GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


# -- smaller scale through the butler ------------------------------------------------------------


def build_butler(repo: Path, n_visits: int, seed: int) -> None:
    """A scratch repo holding a small survey: tracts/patches (rings skymap, near the visits) and visits."""
    from lsst.daf.butler import Butler, Timespan
    from lsst.sphgeom import ConvexPolygon, UnitVector3d

    Butler.makeRepo(str(repo))
    butler = Butler.from_config(str(repo), writeable=True)
    sky = synthetic.rings_skymap(num_rings=120)
    rng = np.random.default_rng(seed)
    ra = rng.uniform(30.0, 42.0, n_visits)
    dec = rng.uniform(-36.0, -28.0, n_visits)
    visits = {"visit": np.arange(1, n_visits + 1, dtype=np.int64), "ra": ra, "dec": dec,
              "rot": rng.uniform(0, 360, n_visits), "band": rng.choice(synthetic.BANDS[1:5], n_visits)}
    fp = synthetic.focal_plane()
    poly = lambda v: ConvexPolygon([UnitVector3d(*x) for x in v])
    tra, tdec = sky.centres()
    near = np.flatnonzero((tra > 24) & (tra < 48) & (tdec > -42) & (tdec < -22))
    reg = butler.registry
    reg.insertDimensionData("instrument", {"name": "SynCam", "visit_max": 10**6, "visit_system": 0,
                                           "exposure_max": 10**6, "detector_max": 200, "class_name": "SynCam"})
    reg.insertDimensionData("physical_filter", *[{"instrument": "SynCam", "name": f"{b}_f", "band": b}
                                                 for b in synthetic.BANDS])
    reg.insertDimensionData("detector", *[{"instrument": "SynCam", "id": d, "full_name": f"D{d:03d}"}
                                          for d in range(fp.shape[0])])
    reg.insertDimensionData("day_obs", {"instrument": "SynCam", "id": 20250101})
    reg.insertDimensionData("skymap", {"name": "rings", "hash": b"bench", "tract_max": len(sky.tract_id),
                                       "patch_nx_max": 1, "patch_ny_max": 1})
    reg.insertDimensionData("tract", *[{"skymap": "rings", "id": int(sky.tract_id[i]),
                                        "region": poly(sky.polygons.vertices[i, :sky.polygons.nvert[i]])}
                                       for i in near])
    # One patch per tract covering it (the planner counts patches from the registry).
    reg.insertDimensionData("patch", *[{"skymap": "rings", "tract": int(sky.tract_id[i]), "id": 0, "cell_x": 0,
                                        "cell_y": 0, "region": poly(sky.polygons.vertices[i, :sky.polygons.nvert[i]])}
                                       for i in near])
    corners = synthetic.detector_vertices(ra, dec, visits["rot"], fp)
    vrecs, drecs = [], []
    for v in range(n_visits):
        vid = int(visits["visit"][v])
        allc = corners[v].reshape(-1, 3)
        vrecs.append({"instrument": "SynCam", "id": vid, "day_obs": 20250101, "physical_filter": f"{visits['band'][v]}_f",
                      "name": f"v{vid}", "seq_num": vid, "region": ConvexPolygon.convexHull([UnitVector3d(*x) for x in allc]),
                      "timespan": Timespan(None, None)})
        for d in range(fp.shape[0]):
            drecs.append({"instrument": "SynCam", "visit": vid, "detector": d, "region": poly(corners[v, d])})
    reg.insertDimensionData("visit", *vrecs)
    reg.insertDimensionData("visit_detector_region", *drecs)
    butler.close()


def butler_comparison(n_visits: int, seed: int, work: Path) -> str:
    repo = work / "butler"
    t0 = time.perf_counter()
    build_butler(repo, n_visits, seed)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    via_registry = from_butler(repo, "SynCam", "rings", overlaps="registry")
    t_reg = time.perf_counter() - t0
    t0 = time.perf_counter()
    via_planner = from_butler(repo, "SynCam", "rings", overlaps="geometry")
    t_geo = time.perf_counter() - t0
    same = all(np.array_equal(getattr(via_registry, n), getattr(via_planner, n))
               for n in ("ov_visit", "ov_tract", "ov_ndet"))
    n_det_rows = len(via_registry.det_visit)
    print(f"butler (small scale): {n_visits} visits x 189 detectors inserted in {t_build:.1f} s; "
          f"registry spatial join {t_reg:.2f} s, planner path {t_geo:.2f} s, "
          f"ratio registry/planner = {t_reg / max(t_geo, 1e-9):.2f}; (visit, detector, patch) rows "
          f"{n_det_rows} vs {len(via_planner.det_visit)}; overlap tables identical: {'yes' if same else 'no'}")
    cfg = production_like_config(work)
    flow = dataflow_from_mapping(cfg, synthetic.DRP_LIKE_DATAFLOW)
    try:
        p1 = plan_campaign(cfg, via_registry, dataflow=flow).model_dump_json()
        p2 = plan_campaign(cfg, via_planner, dataflow=flow).model_dump_json()
        print(f"butler (small scale): plans from both paths identical: {'yes' if p1.replace(via_registry.source, '') == p2.replace(via_planner.source, '') else 'no'}")
    except ValueError as exc:
        print(f"butler (small scale): plan not comparable: {exc}")
    return f"{t_reg / max(t_geo, 1e-9):.2f}"


def oracle_ratios(n_skies: int) -> dict:
    """The METIS path (enumeration off) against the exact optimum on small seeded skies."""
    sys.path.insert(0, str(ROOT / "tests" / "campaign"))
    from layouts import small_inputs
    from multisite_drp.campaign.partition import crossing_work, exact_split, partition_graph, share_error

    ratios, met, feasible = [], 0, 0
    t0 = time.perf_counter()
    for seed in range(n_skies):
        nx, ny = [(3, 2), (4, 2), (3, 3), (4, 3), (6, 2)][seed % 5]
        shares = [0.6, 0.4] if seed % 2 else [0.35, 0.4, 0.25]
        tolerance = 0.05
        inputs = small_inputs(seed=seed, n_visits=int(np.random.default_rng(seed).integers(30, 120)), nx=nx, ny=ny)
        ex = exact_split(inputs, shares, tolerance)
        if not ex.feasible:
            continue
        feasible += 1
        owner = partition_graph(inputs, shares, tolerance=tolerance, exact_tracts=0)  # the default 48 trials
        if share_error(owner, inputs.tract_work(), shares) <= tolerance + 1e-12:
            met += 1
            ratios.append(crossing_work(inputs, owner, len(shares)) / max(ex.optimum, 1e-12))
    r = np.sort(np.asarray(ratios))
    out = {"skies": n_skies, "feasible": feasible, "met": met, "seconds": time.perf_counter() - t0,
           "median": float(np.median(r)) if len(r) else float("nan"),
           "p90": float(np.quantile(r, 0.9)) if len(r) else float("nan"), "worst": float(r[-1]) if len(r) else 0.0}
    print(f"oracle: {n_skies} small skies (6-12 tracts, 2-3 sites, tolerance 0.05), {feasible} with a split in "
          f"tolerance; the METIS path met it in {met} ({met / max(feasible, 1):.0%}); cost over the optimum where met: "
          f"median {out['median']:.3f}, p90 {out['p90']:.3f}, worst {out['worst']:.3f}; {out['seconds']:.1f} s")
    return out


def kahypar_ratio(inputs, plan, ini: str | None, seed: int, tol: float) -> str:
    """Our crossing PVIs over KaHyPar's (after the same repair and refinement): ``R`` or ``na``."""
    try:
        import kahypar
    except ImportError:
        print("kahypar: not installed (optional, GPL-3: pip install kahypar); vs_kahypar=na")
        return "na"
    if not ini or not Path(ini).is_file():
        print(f"kahypar: no preset file ({ini!r}; --kahypar-ini or $KAHYPAR_INI, e.g. its "
              "config/km1_kKaHyPar_sea20.ini); vs_kahypar=na")
        return "na"
    from multisite_drp.campaign.partition import (
        components_per_site,
        crossing_work,
        repair_and_refine,
        share_error,
    )

    shares = [s.share_target for s in plan.sites]
    k = len(shares)
    work = inputs.tract_work()
    order = np.lexsort((inputs.ov_tract, inputs.ov_visit))
    v, t = inputs.ov_visit[order], inputs.ov_tract[order]
    size = np.bincount(v, minlength=inputs.n_visits)
    rows = size[v] >= 2  # a visit on one tract cuts nothing
    edges = np.flatnonzero(size >= 2)
    index = np.concatenate([[0], np.cumsum(size[edges])])
    t0 = time.perf_counter()
    h = kahypar.Hypergraph(inputs.n_tracts, len(edges), index.tolist(), t[rows].tolist(), k,
                           inputs.visit_ndet[edges].astype(int).tolist(), np.maximum(work, 1).astype(int).tolist())
    ctx = kahypar.Context()
    ctx.loadINIconfiguration(str(ini))
    ctx.setK(k)
    ctx.setEpsilon(0.03)
    total = int(np.maximum(work, 1).sum())
    ctx.setCustomTargetBlockWeights([int(np.ceil(s * total * 1.03)) for s in shares])
    ctx.setSeed(seed)
    ctx.suppressOutput(True)
    kahypar.partition(h, ctx)
    raw = np.array([h.blockID(i) for i in range(inputs.n_tracts)], dtype=np.int64)
    t_kh = time.perf_counter() - t0
    t0 = time.perf_counter()
    polished = repair_and_refine(inputs, shares, raw, tolerance=tol)
    t_pol = time.perf_counter() - t0
    ours = crossing_counts(inputs, plan)[0]
    c_raw, c_pol = crossing_work(inputs, raw, k), crossing_work(inputs, polished, k)
    print(f"kahypar {getattr(kahypar, '__version__', '?')}: {len(edges)} visit hyperedges over {inputs.n_tracts} tracts, "
          f"k={k}, {Path(ini).name}, {t_kh:.1f} s: crossing PVIs {c_raw:,} (share error "
          f"{share_error(raw, work, shares):.4f}, region pieces {components_per_site(inputs, raw, k)}); after our "
          f"repair and refinement ({t_pol:.1f} s) {c_pol:,} (share error {share_error(polished, work, shares):.4f}, "
          f"pieces {components_per_site(inputs, polished, k)}); ours {ours:,}: ours / kahypar = {ours / c_pol:.3f}")
    return f"{ours / c_pol:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=190_000)
    ap.add_argument("--rings", type=int, default=120)
    ap.add_argument("--small-visits", type=int, default=150)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-butler", action="store_true")
    ap.add_argument("--oracle-skies", type=int, default=60)
    ap.add_argument("--objective", choices=["all_crossings", "hub_free"], default="all_crossings",
                    help="planner.objective of the graph plan and both baselines (DESIGN 55)")
    ap.add_argument("--kahypar-ini", default=os.environ.get("KAHYPAR_INI"),
                    help="a KaHyPar preset file (its config/km1_kKaHyPar_sea20.ini); without it vs_kahypar=na")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="planner_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "pipeline.yaml").write_text("description: placeholder (the benchmark uses a dataflow mapping)\n")

    t0 = time.perf_counter()
    sky = synthetic.rings_skymap(num_rings=args.rings)
    inputs = synthetic.synthetic_survey(args.visits, skymap=sky, seed=args.seed)
    t_gen = time.perf_counter() - t0
    to_parquet(inputs, work / "survey.parquet")
    det_visits = int(inputs.visit_ndet.sum())
    print(f"inputs: {inputs.n_visits} visits, {det_visits} detector-visits, {inputs.n_tracts} tracts "
          f"({int((inputs.tract_work() > 0).sum())} with work), {len(inputs.ov_visit)} (visit, tract) overlaps, "
          f"{len(inputs.multi_visit)} shared-detector sets ({int(inputs.multi_ndet.sum())} detector-visits on 2+ "
          f"tracts); generated with exact overlaps in {t_gen:.1f} s, peak {peak_gb():.2f} GB so far")
    del inputs

    cfg = production_like_config(work)
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"objective": args.objective})})
    flow = dataflow_from_mapping(cfg, synthetic.DRP_LIKE_DATAFLOW)
    print(f"planner.objective: {cfg.planner.objective}")
    can_reset = reset_hwm()
    t0, c0 = time.perf_counter(), time.process_time()
    inputs = from_parquet(work / "survey.parquet")
    t_load = time.perf_counter() - t0
    plan = plan_to_directory(cfg, work / "plan", inputs=inputs, dataflow=flow, baselines=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    plan_peak = f"{hwm_gb():.2f} GB" if can_reset else "n/a"
    print(f"plan: loaded parquet in {t_load:.1f} s; planned and wrote plan.json, BPS files, report and sky map "
          f"in {seconds:.1f} s total ({cpu:.1f} s of CPU: on a shared machine the wall time is not the planner's), "
          f"peak RSS while planning {plan_peak} -> {work / 'plan'}")
    m = plan.metrics
    for s in plan.sites:
        print(f"  {s.name}: visits {len(s.visits)}, tracts {len(s.tracts)}, share {s.share_achieved:.4f} "
              f"(tract work {s.tract_share_achieved:.4f}, target {s.share_target:.2f}), region pieces {s.components}")

    t0 = time.perf_counter()
    stripes = plan_campaign(cfg, inputs, "ra_stripes", flow)
    robin = plan_campaign(cfg, inputs, "round_robin", flow)
    t_base = time.perf_counter() - t0
    ratio = m.cross_site_bytes / stripes.metrics.cross_site_bytes
    print(f"metric (cross-site TB; excludes raws to their processing site and returns to the hub), baselines "
          f"planned in {t_base:.1f} s:")
    for name, p in (("graph", plan), ("ra_stripes", stripes), ("round_robin", robin)):
        pm = p.metrics
        print(f"  {name:12s} cross-site {pm.cross_site_bytes / 1e12:9.2f} TB  overlap {pm.overlap_bytes / 1e12:9.2f} TB"
              f"  share_error {pm.share_error:.4f}  connected {'yes' if pm.connected else 'no'}")
    for name, p in (("graph", plan), ("ra_stripes", stripes)):
        print(f"  {name:12s} metric by site pair (both directions): {pair_volumes(p)}")
    print(f"  graph / ra_stripes = {ratio:.3f}; graph / round_robin = "
          f"{m.cross_site_bytes / robin.metrics.cross_site_bytes:.3f}")
    if cfg.planner.objective != "all_crossings":  # the baseline as the default objective plans it
        plain = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"objective": "all_crossings"})})
        base = plan_campaign(plain, inputs, "ra_stripes", flow).metrics.cross_site_bytes
        print(f"  graph / ra_stripes planned with objective all_crossings = {m.cross_site_bytes / base:.3f}")
    for name, p in (("graph", plan), ("ra_stripes", stripes)):
        exact, per_tract = crossing_counts(inputs, p)
        print(f"  {name:12s} crossing PVIs {exact:,} once per (visit, detector, site); the per-(visit, tract) "
              f"sum would say {per_tract:,} (+{per_tract / max(exact, 1) - 1:.1%})")
    if not args.skip_butler:
        butler_comparison(args.small_visits, args.seed, work)
    oracle = oracle_ratios(args.oracle_skies)
    peak = peak_gb()  # the planner's, before the optional KaHyPar comparison
    vs_kahypar = kahypar_ratio(inputs, plan, args.kahypar_ini, args.seed, cfg.planner.share_tolerance)
    print(f"planner: visits={plan.n_visits} seconds={seconds:.1f} peak_gb={peak:.2f} "
          f"transfer_ratio_vs_stripes={ratio:.3f} share_error={m.share_error:.4f} "
          f"connected={'yes' if m.connected else 'no'} oracle_p90={oracle['p90']:.3f} vs_kahypar={vs_kahypar}")


if __name__ == "__main__":
    main()
