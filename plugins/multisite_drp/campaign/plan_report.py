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

__all__ = ["plan_summary", "write_markdown", "write_report", "write_skymap_png"]

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


def write_skymap_png(plan: CampaignPlan, inputs: SpatialInputs, path: str | os.PathLike[str],
                     max_visits: int = 4000) -> Path:
    """Tracts coloured by owning site, visit centres, and boundary-crossing visits highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    ra_t = inputs.tract_ra.copy()
    if not small:
        ra_t = np.where(ra_t > 180, ra_t - 360, ra_t)
    cols = np.array([SITE_COLOURS[o % len(SITE_COLOURS)] if o >= 0 else "#cccccc" for o in t_owner])
    sizes = 30 if not small else 900
    ax.scatter(ra_t[~t_empty], inputs.tract_dec[~t_empty], c=cols[~t_empty], s=sizes / 3 if not small else sizes,
               marker="s", alpha=0.55, linewidths=0)
    ax.scatter(ra_t[t_empty], inputs.tract_dec[t_empty], c=cols[t_empty], s=sizes / 8 if not small else sizes / 3,
               marker="s", alpha=0.15, linewidths=0)
    if small:
        for i in range(inputs.n_tracts):
            ax.annotate(str(inputs.tract_id[i]), (ra_t[i], inputs.tract_dec[i]), fontsize=7, ha="center")
    rng = np.random.default_rng(0)
    vis = np.arange(inputs.n_visits)
    if len(vis) > max_visits:
        vis = np.sort(rng.choice(vis, max_visits, replace=False))
    ra_v = inputs.visit_ra[vis]
    if not small:
        ra_v = np.where(ra_v > 180, ra_v - 360, ra_v)
    inner = vis[~cross[vis]]
    edge = vis[cross[vis]]
    ra_of = {int(v): r for v, r in zip(vis, ra_v)}
    fov_pts = 2.0 if small else 1.0
    ax.scatter([ra_of[int(v)] for v in inner], inputs.visit_dec[inner], s=fov_pts * 40 if small else 1.0,
               facecolors="none" if small else "k", edgecolors="k", linewidths=0.3, alpha=0.5)
    ax.scatter([ra_of[int(v)] for v in edge], inputs.visit_dec[edge], s=fov_pts * 40 if small else 2.0,
               c="#000000", linewidths=1.0, marker="x")
    ax.set_xlabel("RA (deg)" + ("" if small else ", -180..180"))
    ax.set_ylabel("Dec (deg)")
    if not small:
        ax.invert_xaxis()
    ax.set_title(f"{plan.campaign}: tract regions by site ({plan.method}); "
                 f"{int(cross.sum())} boundary-crossing visits (x)")
    handles = [Patch(color=SITE_COLOURS[i % len(SITE_COLOURS)],
                     label=f"{s.name}: {s.share_achieved:.3f} (target {s.share_target:.2f})")
               for i, s in enumerate(plan.sites)]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def write_report(plan: CampaignPlan, inputs: SpatialInputs | None, out_dir: str | os.PathLike[str],
                 baselines: dict[str, CampaignPlan] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``plan.md`` and (with inputs) ``skymap.png`` into ``out_dir``."""
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
    return out
