"""The campaign plan: who processes what and which data moves where, saved as one JSON file.

The plan is the durable hand-off between the planner and everything downstream: the
campaign DAG reads it to know each site's visits and tracts, the butler query of every
(step, site), and which transfers to start before a step may run. It is written once
(``plan.json`` in the plan directory), is byte-for-byte reproducible from the same
inputs, and carries enough of the campaign (step shardings, data query) to be used
without re-reading the campaign file.

A plan *directory* (``plan.json``, the BPS files, the report; :func:`.planner.plan_to_directory`)
is written under a temporary name and renamed into place whole, with a ``COMPLETE``
marker written last: a directory without the marker (its writer stopped midway) is no
plan, :meth:`CampaignPlan.load` refuses it with :class:`IncompletePlanError`, and the
plan task builds it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from multisite_drp.errors import DRPError

__all__ = ["COMPLETE_FILE", "CampaignPlan", "GroupPlan", "IncompletePlanError", "PlanMetrics", "SitePlan", "StepPlan", "Transfer",
           "TransferKind", "id_query", "plan_complete"]

TransferKind = Literal["raw", "bootstrap", "overlap", "gather", "fanout", "return"]
PLAN_FILE = "plan.json"
#: Written last into a plan directory: without it the directory is no plan.
COMPLETE_FILE = "COMPLETE"


#: Plans read by :meth:`CampaignPlan.load_current`, by directory: (file key, plan).
_LOADED: dict[str, tuple[tuple, CampaignPlan]] = {}


class IncompletePlanError(DRPError, FileNotFoundError):
    """A plan directory lacks its ``COMPLETE`` marker: its writer stopped before the end."""


def plan_complete(directory: str | os.PathLike[str]) -> bool:
    """True if ``directory`` holds a whole plan (its ``COMPLETE`` marker is there)."""
    return (Path(directory) / COMPLETE_FILE).is_file()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transfer(_Model):
    """Datasets of one type moving over one link for one step.

    ``visits`` / ``tracts`` name the data IDs involved (ids, sorted); ``count`` is the
    number of datasets (detector-level types count detectors) and ``bytes`` the estimate
    from the campaign's ``planner.dataset_bytes``.
    """

    step: str
    dataset_type: str
    source: str
    destination: str
    kind: TransferKind
    visits: list[int] = Field(default_factory=list)
    tracts: list[int] = Field(default_factory=list)
    count: int
    bytes: int


class SitePlan(_Model):
    name: str
    role: str
    share_target: float
    share_achieved: float  # of detector-visits (the visit-sharded steps' work)
    tract_share_achieved: float  # of tract work (the tract-sharded steps' work)
    detector_visits: int
    tract_work: int
    visits: list[int]
    tracts: list[int]  # tracts with work in this site's region
    empty_tracts: list[int]  # tracts in the region that no visit overlaps
    components: int  # connected pieces of the region (1 = contiguous)


class StepPlan(_Model):
    name: str
    sharding: str
    requires: list[str]

    @model_validator(mode="before")
    @classmethod
    def _legacy_returns(cls, data: Any) -> Any:
        """Plans written before ``returns`` was removed carry ``"returns": []``; nothing else is accepted."""
        if isinstance(data, dict) and data.get("returns") == []:
            data = {k: v for k, v in data.items() if k != "returns"}
        return data


class GroupPlan(_Model):
    """One submission group of a step at a site (:mod:`.grouping`): its own QuantumGraph,
    workflow, output RUN and Rucio datasets. ``group`` is its id (0..n-1 within the step
    and site; the DAG's map index); ``weight`` is its size in quanta-equivalents
    (detector-visits for a visit step, patches for a tract step)."""

    step: str
    site: str
    group: int
    dimension: str  # "visit", "tract", or "" for a global step
    ids: list[int]
    weight: int
    label: str

    def as_map_item(self) -> dict:
        """What the DAG maps over: the group id and the label the UI shows as its map index."""
        return {"group": self.group, "label": self.label}


class PlanMetrics(_Model):
    """Quality figures (see ``planner.py`` for the metric's definition)."""

    cross_site_bytes: int
    overlap_bytes: int
    bytes_by_kind: dict[str, int]
    bytes_by_link: dict[str, int]
    share_error: float
    visit_share_error: float
    tract_share_error: float
    connected: bool
    boundary_visits: int


class CampaignPlan(_Model):
    campaign: str
    method: str
    instrument: str
    skymap: str
    campaign_query: str  # the campaign's data_query, ANDed into every step query
    inputs_source: str
    n_visits: int
    n_tracts: int
    sites: list[SitePlan]
    steps: list[StepPlan]
    transfers: list[Transfer]
    orphan_visits: list[int] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    metrics: PlanMetrics
    max_group_size: int = 0  # planner.max_group_size the groups were cut with
    groups: list[GroupPlan] = Field(default_factory=list)

    # -- persistence -----------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``DIR/plan.json`` (atomically: a temporary file renamed into place)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / PLAN_FILE
        tmp = d / (PLAN_FILE + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CampaignPlan:
        """The plan in a plan directory (which must be complete) or in a ``plan.json`` file."""
        path = Path(directory)
        if path.is_dir():
            if not plan_complete(path):
                raise IncompletePlanError(
                    f"{path}: incomplete plan directory (no {COMPLETE_FILE} marker): its writer stopped before "
                    "finishing; run the plan task (actions.make_plan / plan_campaign) again to rebuild it")
            path = path / PLAN_FILE
        try:
            return cls.model_validate_json(path.read_text())
        except OSError as exc:
            raise FileNotFoundError(f"{path}: cannot read campaign plan: {exc.strerror or exc}") from None

    @classmethod
    def load_current(cls, directory: str | os.PathLike[str]) -> CampaignPlan:
        """:meth:`load`, once per process for the same ``plan.json`` (again when the file
        changed: keyed by its mtime, size and inode). A task's skip decision and its action
        both read the plan; the second is free. The result is shared: do not modify it."""
        path = Path(directory)
        try:
            st = (path / PLAN_FILE).stat()
            key = (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return cls.load(path)  # raises the plan's own error (missing, incomplete)
        cached = _LOADED.get(key[0])
        if cached is None or cached[0] != key or not plan_complete(path):
            _LOADED[key[0]] = (key, cls.load(path))
        return _LOADED[key[0]][1]

    # -- queries the DAG uses --------------------------------------------------------------

    def site(self, name: str) -> SitePlan:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"plan for {self.campaign!r} has no site {name!r}; sites: {[s.name for s in self.sites]}")

    def step(self, name: str) -> StepPlan:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"plan for {self.campaign!r} has no step {name!r}; steps: {[s.name for s in self.steps]}")

    @property
    def hub(self) -> str:
        return next(s.name for s in self.sites if s.role == "hub")

    def site_visits(self, site: str) -> list[int]:
        return self.site(site).visits

    def site_tracts(self, site: str) -> list[int]:
        return self.site(site).tracts

    def sites_for(self, step: str) -> list[str]:
        """Sites that run ``step``: every site with work for visit/tract steps, the hub for global ones."""
        st = self.step(step)
        if st.sharding == "global":
            return [self.hub]
        key = "visits" if st.sharding == "visit" else "tracts"
        return [s.name for s in self.sites if getattr(s, key)]

    def transfers_for(self, step: str, destination: str) -> list[Transfer]:
        """Transfers that must complete at ``destination`` before ``step`` runs there."""
        self.step(step)
        return [t for t in self.transfers if t.step == step and t.destination == destination
                and t.kind != "return"]

    def returns_for(self, step: str, source: str) -> list[Transfer]:
        """Outputs of ``step`` at ``source`` to replicate back to the hub afterwards."""
        return [t for t in self.transfers if t.step == step and t.source == source and t.kind == "return"]

    def groups_for(self, step: str, site: str) -> list[GroupPlan]:
        """The submission groups of ``step`` at ``site``, by id; none where the site has no work."""
        self.step(step)
        return [g for g in self.groups if g.step == step and g.site == site]

    def group(self, step: str, site: str, group: int) -> GroupPlan:
        """One group; ``KeyError`` naming the groups there are if it is not in the plan."""
        for g in self.groups:
            if g.step == step and g.site == site and g.group == group:
                return g
        raise KeyError(f"plan for {self.campaign!r} has no group {group!r} of {step} at {site}; it has "
                       f"{[g.group for g in self.groups_for(step, site)]}")

    def group_query(self, step: str, site: str, group: int) -> str:
        """Butler query of one group: its visits or tracts ANDed with the campaign's query."""
        g = self.group(step, site, group)
        return self.data_query(step, site, g.ids if g.dimension else None)

    def ids_for(self, step: str, site: str) -> tuple[str, list[int]]:
        """(dimension, ids) restricting ``step`` at ``site``; ('', []) for a global step."""
        st = self.step(step)
        if st.sharding == "global":
            return "", []
        if st.sharding == "visit":
            return "visit", self.site_visits(site)
        return "tract", self.site_tracts(site)

    def data_query(self, step: str, site: str, ids: list[int] | None = None) -> str:
        """Butler query for ``step`` at ``site`` (or for a group ``ids`` of its data IDs).

        ``visit IN (...)`` / ``tract IN (...)`` ANDed with the campaign's data query. A
        global step gets the campaign's query alone (it runs on everything at the hub).
        """
        dim, all_ids = self.ids_for(step, site)
        if dim and site not in self.sites_for(step):
            raise KeyError(f"step {step!r} does not run at site {site!r}; it runs at {self.sites_for(step)}")
        return id_query(dim, all_ids if ids is None else ids, self.campaign_query)


def id_query(dim: str, ids: list[int], base: str = "") -> str:
    """``(base) AND dim IN (1, 2, ...)``; just ``base`` when ``dim`` is empty.

    ``base`` (the campaign's ``data_query``) must parse on its own as one complete butler
    expression (:func:`.query.parse_query`, the butler's parser, cached), so the
    parentheses hold it whole and no ``a) OR (b`` can escape the site's restriction.
    """
    parts = []
    if base:
        from .query import QueryError, parse_query

        try:
            parse_query(base)
        except QueryError as exc:
            raise QueryError(f"data_query {base!r}: {exc}") from None
        parts.append(f"({base})")
    if dim:
        if not ids:
            raise ValueError(f"empty selection: no {dim} ids for the query; expected at least one")
        parts.append(f"{dim} IN ({', '.join(str(int(i)) for i in ids)})")
    return " AND ".join(parts)
