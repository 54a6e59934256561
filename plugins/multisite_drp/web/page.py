"""The campaign page's HTML and its progress map (matplotlib, PNG).

Everything shown is escaped: task ids, labels, errors and paths come from files and the
database and are never trusted as markup. No script runs in the page; it refreshes
itself (``<meta http-equiv=refresh>``) while the run is unfinished.
"""

from __future__ import annotations

import html
import io
import time
import urllib.parse
from typing import Any

from multisite_drp.campaign.plan_report import SITE_COLOURS
from multisite_drp.campaign.spatial import centres_xyz

from .progress import STATES, GroupProgress

__all__ = ["STATE_STYLE", "render_index", "render_map_png", "render_run"]

#: How each progress state is drawn: the tract's fill opacity, and its hatch.
STATE_STYLE: dict[str, tuple[float, str]] = {
    "done": (0.85, ""), "running": (0.5, "//"), "waiting": (0.12, ""), "failed": (0.85, "xx"), "skipped": (0.05, ".."),
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;margin:.4em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.failed{color:#b00;font-weight:bold}.warn{color:#a60}
.muted{color:#777}h1{font-size:20px}h2{font-size:16px;margin-top:1.4em}img{max-width:100%;border:1px solid #ddd}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _mb(n: Any) -> str:
    return "–" if n is None else f"{int(n) / 1e6:,.1f}"


def _num(x: Any, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f"<th class=l>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class=l>{c}</td>" if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (f"<!doctype html><html><head><meta charset=utf-8>{meta}<title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def render_index(dag_id: str, runs: list[dict], note: str | None = None) -> str:
    """The list of a DAG's recent runs, each linking to its page (``note``: a line above it)."""
    rows = [[(f'<a href="run?{_e(urllib.parse.urlencode({"dag_id": dag_id, "run_id": r["run_id"]}))}">'
              f'{_e(r["run_id"])}</a>'), _e(r.get("state")), _e(r.get("campaign_file")), _e(r.get("generation")),
             _e(r.get("start"))] for r in runs]
    body = (f"<h1>DRP campaign runs ({_e(dag_id)})</h1>" + (f"<p class=muted>{_e(note)}</p>" if note else "")
            + (_table(["run", "state", "campaign file", "generation", "started"], rows, left=3) if rows
               else "" if note else "<p class=muted>No run yet. Trigger the DAG from the Airflow UI.</p>"))
    return _page("DRP campaign", body)


def render_run(*, dag_id: str, run: dict, config: Any, plan: Any, groups: list[GroupProgress],
               table: list[dict], tracts: dict[int, tuple[str, str]], report: dict | None,
               alerts: list[dict], has_map: bool) -> str:
    """One run's page: progress map and counts, shares and bytes per link, the report,
    the open alerts."""
    q = _e(urllib.parse.urlencode({"dag_id": dag_id, "run_id": run["run_id"]}))
    finished = run.get("state") in ("success", "failed")
    counts = {s: sum(1 for g in groups if g.state == s) for s in STATES}
    tract_counts = {s: sum(1 for _, st in tracts.values() if st == s) for s in STATES}
    parts = [f"<h1>DRP campaign {_e(config.name)} · generation {_e(run.get('generation'))}</h1>",
             (f"<p>Run <b>{_e(run['run_id'])}</b> of {_e(dag_id)}: <b>{_e(run.get('state'))}</b>. "
              f"Groups: {', '.join(f'{counts[s]} {s}' for s in STATES if counts[s])}. "
              f"<span class=muted>Read at {_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}"
              f"{'' if finished else '; refreshes every 30 s'}.</span></p>")]
    if alerts:
        rows = [[_e(a.get("level")) if a.get("level") != "failure" else "<span class=failed>failure</span>",
                 _e(a.get("kind") or ""),
                 _e(a.get("task_id") or "") + (f"[{_e(a['map_index'])}]" if a.get("map_index") is not None else ""),
                 _e(a.get("error")),
                 f'<a href="{_e(a["log_url"])}" target=_top>log</a>' if _safe_link(a.get("log_url")) else "",
                 _e(time.strftime("%m-%d %H:%M", time.gmtime(a.get("at") or 0)))] for a in alerts]
        parts.append(f"<h2>Open alerts ({len(alerts)})</h2>"
                     + _table(["level", "kind", "task", "what", "", "at (UTC)"], rows, left=4))
    else:
        parts.append("<h2>Open alerts</h2><p class=muted>None.</p>")
    parts.append("<h2>Sky: tracts by owning site, shaded by progress</h2>")
    if has_map:
        legend = ", ".join(f"{tract_counts[s]} {s}" for s in STATES if tract_counts[s])
        parts.append(f'<p>{len(tracts)} tracts: {_e(legend)}. {plan.metrics.boundary_visits} of {plan.n_visits} '
                     f'visits cross a site boundary (the <a href="plan-skymap.png?{q}">planner\'s map</a> draws '
                     f'them).</p><img alt="progress map" src="map.png?{q}">')
    else:
        parts.append("<p class=muted>The plan has no tract centres (planned before tracts.json was written, or "
                     "without spatial inputs).</p>")
    parts.append("<h2>Progress per step and site (submission groups)</h2>")
    parts.append(_table(["step", "site", "groups", *STATES],
                        [[_e(r["step"]), _e(r["site"]), r["groups"],
                          *[(f"<span class=failed>{r[s]}</span>" if s == "failed" and r[s] else r[s]) for s in STATES]]
                         for r in table], left=2))
    parts.append("<h2>Shares</h2>")
    parts.append(_table(["site", "role", "target", "achieved (detector-visits)", "achieved (tract work)", "visits",
                         "tracts"],
                        [[_e(s.name), _e(s.role), f"{s.share_target:.3f}", f"{s.share_achieved:.4f}",
                          f"{s.tract_share_achieved:.4f}", len(s.visits), len(s.tracts)] for s in plan.sites],
                        left=2))
    for w in plan.warnings:
        parts.append(f"<p class=warn>Plan: {_e(w)}</p>")
    parts.append("<h2>Bytes per link (MB): planned against moved</h2>")
    if report and report.get("planned_vs_moved"):
        links = report["planned_vs_moved"]["by_link"]
        parts.append(_table(["link", "planned", "moved", "moved / planned"],
                            [[_e(r["link"]), _mb(r["planned_bytes"]), _mb(r["moved_bytes"]),
                              _num(r.get("moved_over_planned"), "{:.3f}")] for r in links]))
    else:
        planned: dict[str, int] = {}
        for t in plan.transfers:
            planned[f"{t.source}->{t.destination}"] = planned.get(f"{t.source}->{t.destination}", 0) + int(t.bytes)
        parts.append("<p class=muted>Moved: known once the run's report task has run.</p>"
                     + _table(["link", "planned"], [[_e(k), _mb(v)] for k, v in sorted(planned.items())]))
    parts.append("<h2>Campaign report</h2>")
    if report:
        rate = report.get("rate", {})
        parts.append(f"<p>Wall {_num(report.get('wall_seconds'), '{:,.0f}')} s; "
                     f"{_num(rate.get('quanta_per_hour'), '{:,.0f}')} quanta/h against a target of "
                     f"{_num(rate.get('target_quanta_per_hour'), '{:,.0f}')} "
                     f"({'met' if rate.get('meets_quanta_target') else 'not met'}); "
                     f"{_num(rate.get('visits_per_hour'), '{:,.1f}')} visits/h.</p>")
        parts.append(_table(["step", "site", "groups", "quanta", "succeeded", "failed", "wall s", "quanta/h",
                             "MB in", "MB out"],
                            [[_e(r["step"]), _e(r["site"]), r["groups"], r["quanta"], r["quanta_succeeded"],
                              (f"<span class=failed>{r['quanta_failed']}</span>" if r["quanta_failed"]
                               else r["quanta_failed"]),
                              _num(r["wall_seconds"], "{:,.1f}"), _num(r.get("quanta_per_hour")),
                              _mb(r["bytes_in"]), _mb(r["bytes_out"])]
                             for r in report["steps"]["by_step_and_site"]], left=2))
    else:
        parts.append("<p class=muted>Not written yet: the run's report task writes it at the end.</p>")
    return _page(f"DRP {config.name}: {run['run_id']}", "".join(parts), refresh=None if finished else 30)


def _safe_link(url: Any) -> bool:
    return isinstance(url, str) and urllib.parse.urlsplit(url).scheme in ("http", "https")


def render_map_png(plan: Any, centres: dict[int, tuple[float, float]], tracts: dict[int, tuple[str, str]]) -> bytes:
    """The progress map: each tract a square (small skies, RA/Dec with tract ids) or a
    marker (survey-sized, Mollweide) in its owning site's colour, its opacity and hatch
    by progress (:data:`STATE_STYLE`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch, Rectangle

    colour = {s.name: SITE_COLOURS[i % len(SITE_COLOURS)] for i, s in enumerate(plan.sites)}
    ids = [t for t in tracts if t in centres]
    ra = np.array([centres[t][0] for t in ids])
    dec = np.array([centres[t][1] for t in ids])
    small = len(ids) < 400
    if small:
        fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
        if len(ids) > 1:
            xyz = centres_xyz(ra, dec)
            dots = np.clip(xyz @ xyz.T, -1, 1)
            np.fill_diagonal(dots, -1)
            side = float(np.median(np.degrees(np.arccos(dots.max(axis=1)))))
        else:
            side = 1.0
        for t, x, y in zip(ids, ra, dec, strict=True):
            site, state = tracts[t]
            alpha, hatch = STATE_STYLE[state]
            w = side / max(float(np.cos(np.radians(y))), 0.05)
            ax.add_patch(Rectangle((x - w / 2, y - side / 2), w, side, facecolor=to_rgba(colour[site], alpha),
                                   edgecolor="#b00000" if state == "failed" else "white",
                                   linewidth=2.0 if state == "failed" else 1.0, hatch=hatch))
            ax.annotate(str(t), (x, y), fontsize=7, ha="center", va="center")
        ax.autoscale_view()
        ax.invert_xaxis()
        ax.set_xlabel("RA (deg)")
        ax.set_ylabel("Dec (deg)")
        ax.set_aspect(1.0 / max(float(np.cos(np.radians(np.median(dec)))) if len(dec) else 1.0, 0.05))
    else:
        fig = plt.figure(figsize=(11, 6), dpi=100)
        ax = fig.add_subplot(111, projection="mollweide")
        x = -np.radians(np.where(ra > 180, ra - 360, ra))
        y = np.radians(dec)
        for state, (alpha, _) in STATE_STYLE.items():
            sel = np.array([tracts[t][1] == state for t in ids])
            if sel.any():
                cols = [to_rgba(colour[tracts[t][0]], alpha) for t, s in zip(ids, sel, strict=True) if s]
                ax.scatter(x[sel], y[sel], c=cols, s=10, marker="s", linewidths=0.6 if state == "failed" else 0,
                           edgecolors="#b00000" if state == "failed" else "none")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    handles = [Patch(color=colour[s.name], label=s.name) for s in plan.sites]
    handles += [Patch(facecolor=to_rgba("#555555", a), hatch=h, edgecolor="#b00000" if st == "failed" else "white",
                      label=st) for st, (a, h) in STATE_STYLE.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(f"{plan.campaign}: tracts by owning site, shaded by progress", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
