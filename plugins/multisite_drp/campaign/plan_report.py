"""Human-readable views of a plan: summary JSON, a sky map PNG and a markdown table.

The sky map answers "which site owns which part of the sky, and which visits cross
the boundaries" at a glance; the table gives the shares achieved against the targets
and the estimated bytes on every link, the two numbers an operator checks before
starting a months-long campaign.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .plan import CampaignPlan
from .spatial import SpatialInputs

__all__ = ["TRACTS_FILE", "footprint_outlines", "plan_summary", "read_tract_centres", "write_markdown",
           "write_report", "write_skymap_png", "write_tract_centres"]

#: The tract centres a plan was made over (``tract``, ``ra``, ``dec`` lists), beside plan.json:
#: what the campaign page draws its progress map from without reading the butler.
TRACTS_FILE = "tracts.json"

SITE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _gb(n: int) -> str:
    return f"{n / 1e9:,.2f}"


def plan_summary(plan: CampaignPlan) -> dict:
    """Small JSON-able summary (no id lists): shares, metrics and transfer totals."""
    kinds: dict[str, dict[str, int]] = {}
    for t in plan.transfers:
        k = kinds.setdefault(t.kind, {"transfers": 0, "datasets": 0, "bytes": 0})
        k["transfers"] += 1
        k["datasets"] += t.count
        k["bytes"] += t.bytes
    return {
        "campaign": plan.campaign, "method": plan.method, "inputs": plan.inputs_source,
        "visits": plan.n_visits, "tracts": plan.n_tracts,
        "sites": [{"name": s.name, "role": s.role, "share_target": s.share_target,
                   "share_achieved": s.share_achieved, "tract_share_achieved": s.tract_share_achieved,
                   "visits": len(s.visits), "tracts": len(s.tracts), "empty_tracts": len(s.empty_tracts),
                   "components": s.components} for s in plan.sites],
        "metrics": plan.metrics.model_dump(),
        "transfers_by_kind": dict(sorted(kinds.items())),
        "orphan_visits": len(plan.orphan_visits), "warnings": plan.warnings,
    }


def write_markdown(plan: CampaignPlan, path: str | os.PathLike[str],
                   baselines: dict[str, CampaignPlan] | None = None) -> Path:
    lines = [f"# Campaign plan: {plan.campaign} ({plan.method})", "",
             f"Inputs: {plan.inputs_source}; {plan.n_visits} visits, {plan.n_tracts} tracts.", "",
             ("| site | role | target share | achieved (detector-visits) | achieved (tract work) | visits | tracts "
              "| region pieces |"),
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in plan.sites:
        lines.append(f"| {s.name} | {s.role} | {s.share_target:.3f} | {s.share_achieved:.4f} | "
                     f"{s.tract_share_achieved:.4f} | {len(s.visits)} | {len(s.tracts)} | {s.components} |")
    m = plan.metrics
    lines += ["", (f"Share error (max |achieved - target|): {m.share_error:.4f}; regions connected: "
                   f"{'yes' if m.connected else 'no'}; boundary visits: {m.boundary_visits}."), "",
              "| link | estimated GB |", "|---|---:|"]
    for link, b in m.bytes_by_link.items():
        lines.append(f"| {link} | {_gb(b)} |")
    lines += ["", "| kind | estimated GB |", "|---|---:|"]
    for kind, b in m.bytes_by_kind.items():
        lines.append(f"| {kind} | {_gb(b)} |")
    lines += ["", (f"Cross-site volume (all but raws to their processing site and returns to the hub): "
                   f"{_gb(m.cross_site_bytes)} GB.")]
    if baselines:
        lines += ["", "| method | cross-site GB | ratio to this plan's method |", "|---|---:|---:|"]
        for name, bp in baselines.items():
            ratio = m.cross_site_bytes / max(bp.metrics.cross_site_bytes, 1)
            lines.append(f"| {name} | {_gb(bp.metrics.cross_site_bytes)} | {plan.method}/{name} = {ratio:.3f} |")
    if plan.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in plan.warnings]
    p = Path(path)
    p.write_text("\n".join(lines) + "\n")
    return p


def footprint_outlines(ra: np.ndarray, dec: np.ndarray, radius: np.ndarray, n: int = 32) -> np.ndarray:
    """(N, n, 2) RA/Dec (deg) of small circles of ``radius`` (deg) around each centre."""
    from .spatial import centres_xyz

    c = centres_xyz(ra, dec)
    r_ra, r_dec = np.radians(ra), np.radians(dec)
    east = np.stack([-np.sin(r_ra), np.cos(r_ra), np.zeros_like(r_ra)], axis=1)
    north = np.stack([-np.sin(r_dec) * np.cos(r_ra), -np.sin(r_dec) * np.sin(r_ra), np.cos(r_dec)], axis=1)
    th = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    rr = np.radians(radius)[:, None, None]
    pts = (np.cos(rr) * c[:, None, :]
           + np.sin(rr) * (np.cos(th)[None, :, None] * east[:, None, :] + np.sin(th)[None, :, None] * north[:, None, :]))
    lon = np.degrees(np.arctan2(pts[..., 1], pts[..., 0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(pts[..., 2], -1.0, 1.0)))
    return np.stack([lon, lat], axis=-1)


def write_skymap_png(plan: CampaignPlan, inputs: SpatialInputs, path: str | os.PathLike[str],
                     max_visits: int = 4000, max_footprints: int = 1500) -> Path:
    """Tracts coloured by owning site, visit footprints, and boundary-crossing visits highlighted.

    Survey-sized inputs are drawn on an equal-area Mollweide projection, small inputs
    (under 400 tracts) on an RA/Dec plot with tract ids; RA increases to the left, as on
    the sky. Footprints (outlines of each visit's field, from ``inputs.visit_radius``)
    are drawn for a sample of ``max_footprints`` visits, half of them boundary-crossing
    ones (in bold);
    without radii only visit centres are shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    site_index = {s.name: i for i, s in enumerate(plan.sites)}
    t_owner = np.full(inputs.n_tracts, -1)
    t_empty = np.zeros(inputs.n_tracts, dtype=bool)
    for s in plan.sites:
        if s.tracts:
            t_owner[inputs.tract_index(np.asarray(s.tracts, dtype=np.int64))] = site_index[s.name]
        if s.empty_tracts:
            idx = inputs.tract_index(np.asarray(s.empty_tracts, dtype=np.int64))
            t_owner[idx] = site_index[s.name]
            t_empty[idx] = True
    v_owner = np.full(inputs.n_visits, -1)
    for s in plan.sites:
        if s.visits:
            v_owner[inputs.visit_index(np.asarray(s.visits, dtype=np.int64))] = site_index[s.name]
    # A visit crosses a boundary if it overlaps a tract owned by another site.
    cross = np.zeros(inputs.n_visits, dtype=bool)
    ok = v_owner[inputs.ov_visit] >= 0
    diff = ok & (t_owner[inputs.ov_tract] != v_owner[inputs.ov_visit])
    cross[inputs.ov_visit[diff]] = True

    small = inputs.n_tracts < 400
    if small:
        fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)

        def xy(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return ra, dec
    else:
        fig = plt.figure(figsize=(12, 6.8), dpi=110)
        ax = fig.add_subplot(111, projection="mollweide")

        def xy(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            wrapped = np.where(ra > 180.0, ra - 360.0, ra)
            return -np.radians(wrapped), np.radians(dec)  # RA increases to the left

    cols = np.array([SITE_COLOURS[o % len(SITE_COLOURS)] if o >= 0 else "#cccccc" for o in t_owner])
    tx, ty = xy(inputs.tract_ra, inputs.tract_dec)
    if small:
        # Tracts as squares as wide as the spacing of their centres (the inputs carry no tract polygons).
        from .spatial import centres_xyz

        c = centres_xyz(inputs.tract_ra, inputs.tract_dec)
        dots = np.clip(c @ c.T, -1.0, 1.0)
        np.fill_diagonal(dots, -1.0)
        side = float(np.median(np.degrees(np.arccos(dots.max(axis=1))))) if inputs.n_tracts > 1 else 1.0
        hw = side / 2 / np.maximum(np.cos(np.radians(inputs.tract_dec)), 0.05)
        hh = np.full(inputs.n_tracts, side / 2)
        squares = np.stack([np.stack([tx - hw, ty - hh], 1), np.stack([tx + hw, ty - hh], 1),
                            np.stack([tx + hw, ty + hh], 1), np.stack([tx - hw, ty + hh], 1)], axis=1)
        alpha = np.where(t_empty, 0.15, 0.45)
        ax.add_collection(PolyCollection(squares, facecolors=[matplotlib.colors.to_rgba(col, a)
                                                              for col, a in zip(cols, alpha)],
                                         edgecolors="white", linewidths=1.0))
        for i in range(inputs.n_tracts):
            ax.annotate(str(inputs.tract_id[i]), (tx[i], ty[i]), fontsize=7, ha="center", va="center")
        ax.set_aspect(1.0 / max(float(np.cos(np.radians(np.median(inputs.tract_dec)))), 0.05))
    else:
        ax.scatter(tx[~t_empty], ty[~t_empty], c=cols[~t_empty], s=9, marker="s", alpha=0.55, linewidths=0)
        ax.scatter(tx[t_empty], ty[t_empty], c=cols[t_empty], s=3, marker="s", alpha=0.15, linewidths=0)

    rng = np.random.default_rng(0)
    vis = np.arange(inputs.n_visits)
    if inputs.visit_radius is not None:
        # Half the sample from the boundary-crossing visits (the ones an operator looks for).
        bnd, rest = vis[cross], vis[~cross]
        nb = min(len(bnd), max_footprints // 2)
        nr = min(len(rest), max_footprints - nb)
        sample = np.sort(np.concatenate([rng.choice(bnd, nb, replace=False), rng.choice(rest, nr, replace=False)]))
        outlines = footprint_outlines(inputs.visit_ra[sample], inputs.visit_dec[sample],
                                      inputs.visit_radius[sample])
        px, py = xy(outlines[..., 0].ravel(), outlines[..., 1].ravel())
        polys = np.stack([px.reshape(outlines.shape[:2]), py.reshape(outlines.shape[:2])], axis=-1)
        span = np.pi if not small else 180.0
        keep = (polys[..., 0].max(axis=1) - polys[..., 0].min(axis=1)) < span  # not across the RA seam
        inner, edge = keep & ~cross[sample], keep & cross[sample]
        ax.add_collection(PolyCollection(polys[inner], facecolors="none", edgecolors="#333333",
                                         linewidths=0.25, alpha=0.45), autolim=small)
        ax.add_collection(PolyCollection(polys[edge], facecolors="none", edgecolors="#000000", linewidths=0.9),
                          autolim=small)  # a geo projection's limits are fixed; skip its slow path extents
        legend_visits = f"{int(keep.sum())} visit footprints drawn, boundary-crossing in bold"
    else:
        if len(vis) > max_visits:
            vis = np.sort(rng.choice(vis, max_visits, replace=False))
        vx, vy = xy(inputs.visit_ra[vis], inputs.visit_dec[vis])
        c = cross[vis]
        ax.scatter(vx[~c], vy[~c], s=1.0, c="k", alpha=0.5, linewidths=0)
        ax.scatter(vx[c], vy[c], s=6.0, c="k", marker="x", linewidths=0.8)
        legend_visits = "visit centres; boundary-crossing (x)"
    if small:
        ax.set_xlabel("RA (deg)")
        ax.set_ylabel("Dec (deg)")
        ax.autoscale_view()
        ax.invert_xaxis()  # RA increases to the left, as on the sky
    else:
        ticks = np.arange(-150, 181, 30)
        ax.set_xticks(np.radians(ticks))
        ax.set_xticklabels([f"{(-t) % 360:.0f}°" for t in ticks], fontsize=7)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_xlabel("RA (Mollweide, equal area)")
    ax.set_title(f"{plan.campaign}: tract regions by site ({plan.method}); "
                 f"{int(cross.sum())} of {inputs.n_visits} visits cross a boundary\n{legend_visits}", fontsize=10)
    handles = [Patch(color=SITE_COLOURS[i % len(SITE_COLOURS)],
                     label=f"{s.name}: {s.share_achieved:.3f} (target {s.share_target:.2f})")
               for i, s in enumerate(plan.sites)]
    ax.legend(handles=handles, loc="lower right" if not small else "upper right", fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def write_report(plan: CampaignPlan, inputs: SpatialInputs | None, out_dir: str | os.PathLike[str],
                 baselines: dict[str, CampaignPlan] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``plan.md`` and (with inputs) ``skymap.png`` and
    :data:`TRACTS_FILE` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    summary = plan_summary(plan)
    if baselines:
        summary["baselines"] = {k: {"cross_site_bytes": b.metrics.cross_site_bytes,
                                    "ratio": plan.metrics.cross_site_bytes / max(b.metrics.cross_site_bytes, 1)}
                                for k, b in baselines.items()}
    out = {"json": d / "report.json", "markdown": write_markdown(plan, d / "plan.md", baselines)}
    out["json"].write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if inputs is not None:
        out["png"] = write_skymap_png(plan, inputs, d / "skymap.png")
        out["tracts"] = write_tract_centres(inputs, d / TRACTS_FILE)
    return out


def write_tract_centres(inputs: SpatialInputs, path: str | os.PathLike[str]) -> Path:
    """The tracts' ids and centres (degrees, 6 decimals) as JSON."""
    p = Path(path)
    p.write_text(json.dumps({"tract": [int(t) for t in inputs.tract_id],
                             "ra": [round(float(x), 6) for x in inputs.tract_ra],
                             "dec": [round(float(x), 6) for x in inputs.tract_dec]}))
    return p


def read_tract_centres(directory: str | os.PathLike[str]) -> dict[int, tuple[float, float]] | None:
    """``{tract: (ra, dec)}`` from a plan directory's :data:`TRACTS_FILE`; None if the plan
    has none (written before it existed, or planned without spatial inputs)."""
    p = Path(directory) / TRACTS_FILE
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return {int(t): (float(r), float(d)) for t, r, d in zip(doc["tract"], doc["ra"], doc["dec"], strict=True)}
