"""Campaign configuration: the YAML an operator writes, validated before anything runs.

A campaign file names the pipeline, the input data, the sites that share the work
and the steps to run. Everything here is checked before any external action: a bad
file fails with a message naming the file, the field and what was expected, and
every name that later reaches a collection, a path or a command line is held to a
strict pattern so it cannot smuggle in a separator, a space or a shell character.

No Airflow imports: this module is the domain layer.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from multisite_drp.errors import InputError

__all__ = [
    "CampaignConfig",
    "CampaignConfigError",
    "OnKillSettings",
    "PartitionMethod",
    "PlannerSettings",
    "RateTarget",
    "ReplicationSettings",
    "Sharding",
    "SiteConfig",
    "SiteConnections",
    "SiteRole",
    "StepConfig",
    "TimeoutSettings",
    "load_campaign",
]

# Patterns for names that end up in collections, paths, Rucio DIDs or argv.
SITE_NAME = r"^[a-z][a-z0-9]{1,15}$"
STEP_NAME = r"^[a-z][a-z0-9_]{0,31}$"
CAMPAIGN_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
INSTRUMENT_NAME = r"^[A-Za-z][A-Za-z0-9]{0,31}$"
COLLECTION_NAME = r"^[A-Za-z][A-Za-z0-9_-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$"
DATASET_TYPE_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
RSE_NAME = r"^[A-Z][A-Z0-9_-]{1,63}$"
CONN_ID = r"^[a-z][a-z0-9_]{0,63}$"
COMPUTE_SITE = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
RUCIO_SCOPE = r"^[a-z][a-z0-9_]{0,24}$"

SiteName = Annotated[str, StringConstraints(pattern=SITE_NAME)]
StepName = Annotated[str, StringConstraints(pattern=STEP_NAME)]
CollectionName = Annotated[str, StringConstraints(pattern=COLLECTION_NAME, max_length=200)]
DatasetTypeName = Annotated[str, StringConstraints(pattern=DATASET_TYPE_NAME)]
ConnId = Annotated[str, StringConstraints(pattern=CONN_ID)]

SHARE_TOLERANCE = 1e-6


class CampaignConfigError(InputError, ValueError):
    """A campaign file is unreadable or invalid; the message names file, field and expectation."""


class SiteRole(str, enum.Enum):
    """The hub (USDF) holds everything and runs global steps; remotes process their region."""

    hub = "hub"
    remote = "remote"


class Sharding(str, enum.Enum):
    """How a step's work divides among sites.

    ``visit``: each site runs the visits the plan assigns it (visit and detector-visit steps).
    ``tract``: each site runs the tracts of its sky region (coadd and object steps).
    ``global``: the whole step runs at the hub on every input.
    """

    visit = "visit"
    tract = "tract"
    global_ = "global"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class SiteConnections(_Strict):
    """Airflow connection ids for the three outside systems a site exposes."""

    butler: ConnId
    replica: ConnId
    workflow: ConnId


class SiteConfig(_Strict):
    """One Data Facility."""

    name: SiteName
    title: str = Field(default="", max_length=80, description="Human name, e.g. 'FrDF (CC-IN2P3)'.")
    role: SiteRole
    butler_repo: str = Field(
        min_length=1,
        description="Butler repository: a path (relative to the campaign's data_root) or a URI.",
    )
    rse: Annotated[str, StringConstraints(pattern=RSE_NAME)]
    compute_site: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)]
    compute_cloud: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)] | None = None
    queue: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)] | None = None
    share: float = Field(gt=0.0, le=1.0, description="Fraction of the survey's work this site processes.")
    holds_all_raws: bool = Field(
        default=False,
        description="The site already holds every raw (DMTN-213: USDF and FrDF). The hub always does.",
    )
    connections: SiteConnections

    @field_validator("butler_repo")
    @classmethod
    def _repo_is_plain(cls, value: str) -> str:
        if any(c in value for c in "\n\r\t;|&$`<>\"'") or value.strip() != value:
            raise ValueError("expected a path or URI with no whitespace or shell characters")
        return value


class StepConfig(_Strict):
    """One DRP step: a pipeline subset run at every site (or at the hub, if global)."""

    name: StepName
    subset: Annotated[str, StringConstraints(pattern=STEP_NAME)]
    sharding: Sharding
    description: str = Field(default="", max_length=200)
    requires: list[DatasetTypeName] = Field(
        default_factory=list,
        description="Dataset types that must be present at a site before the step runs there.",
    )
    returns: list[DatasetTypeName] = Field(
        default_factory=list, description="Output dataset types replicated back to the hub."
    )

    @property
    def is_global(self) -> bool:
        return self.sharding is Sharding.global_


class RateTarget(_Strict):
    """The processing rate the campaign must demonstrate (the seed's fifth milestone)."""

    quanta_per_hour: float = Field(gt=0.0)
    visits_per_hour: float | None = Field(default=None, gt=0.0)


class ReplicationSettings(_Strict):
    """How the campaign's data moves through Rucio (one scope per campaign).

    lsst-rucio-register names a file's DID by its path below ``<rse_root>/<scope>/``, so
    every site's butler datastore must lie at ``<rse_root>/<scope>`` of its RSE.
    """

    scope: Annotated[str, StringConstraints(pattern=RUCIO_SCOPE)] = Field(
        description="Rucio scope of every DID the campaign registers (at most 25 characters)."
    )
    activity: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9 _-]{0,49}$")] = Field(
        default="Production Output", description="Rucio transfer activity of the campaign's rules (one of the server's activities)."
    )
    lifetime_days: float | None = Field(
        default=None, gt=0.0, le=3650.0,
        description="Lifetime of the campaign's rules in days; empty: the rules never expire.",
    )

    @property
    def lifetime_seconds(self) -> int | None:
        return None if self.lifetime_days is None else int(self.lifetime_days * 86400)


class PartitionMethod(str, enum.Enum):
    """How the planner divides the tracts among sites (see campaign/planner docs)."""

    graph = "graph"  # weighted graph partition minimising cross-region work
    ra_stripes = "ra_stripes"  # baseline: contiguous runs of RA
    round_robin = "round_robin"  # baseline: tracts dealt out in turn


DimensionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")]


class PlannerSettings(_Strict):
    """Knobs for campaign planning: partition method, size model, BPS group sizes."""

    method: PartitionMethod = PartitionMethod.graph
    dataset_bytes: dict[DatasetTypeName, int] = Field(
        default_factory=dict,
        description="Estimated bytes per dataset of each type, for the transfer plan; "
        "types not listed use default_dataset_bytes.",
    )
    default_dataset_bytes: int = Field(default=1_000_000, gt=0)
    max_group_size: int = Field(
        default=50_000, gt=0, description="Largest number of data IDs in one BPS submission group."
    )
    cluster_by: dict[Literal["visit", "tract"], list[DimensionName]] = Field(
        default_factory=lambda: {"visit": ["visit", "exposure"], "tract": ["tract"]},
        description="BPS clustering per sharding: a task's quanta become one job per value of the first of "
        "these dimensions the task has (visit steps: per visit, raw-level tasks per exposure). A test bed "
        "with millisecond quanta may cluster by instrument / skymap (one job per task).",
    )
    seed: int = 0
    partition_trials: int = Field(
        default=48, ge=1, le=1000,
        description="METIS runs (seeds seed .. seed+N-1) the graph method refines and keeps the best of.",
    )
    share_tolerance: float = Field(
        default=0.002, gt=0.0, lt=0.5,
        description="Largest |achieved - target| share the planner's balancing passes aim for.",
    )
    orphan_visits: str = Field(
        default="error", pattern=r"^(error|nearest|drop)$",
        description="Visits that overlap no tract: 'error' (fail naming them), 'nearest' (give each to "
        "the site owning the nearest tract; no coadd uses them) or 'drop' (leave them out of the plan).",
    )


class TimeoutSettings(_Strict):
    """Limits on every wait of a subprocess or a lock (seconds). A limit reached is an
    error naming the command or the lock and the limit, never a silent hang."""

    command_seconds: float = Field(
        default=86400.0, gt=0.0, le=30 * 86400.0,
        description="Longest run of one middleware command (pipetask qgraph, pre-exec-init-qbb, run-qbb, "
        "butler transfer-from-graph); its process tree is then killed and the command fails.",
    )
    lock_seconds: float = Field(
        default=3600.0, gt=0.0, le=7 * 86400.0,
        description="Longest wait for a site butler's write lock (merges, ingests and chain updates take it "
        "in turn; a merge of a large run holds it for minutes).",
    )
    submit_lock_seconds: float = Field(
        default=120.0, gt=0.0, le=86400.0,
        description="Longest wait for the lock of a workflow's submit directory (submit, restart and cancel "
        "of one workflow take it in turn; each holds it for about a second).",
    )


class OnKillSettings(_Strict):
    """What a wait that is killed (its task marked failed or cleared) does to the work it
    waits on. ``workflows``: ``cancel`` stops the workflow's jobs (embedded runner or PanDA
    request), ``leave`` lets them run on. ``replication``: ``leave`` keeps the rules (Rucio
    goes on; a cleared wait finds them again), ``cancel`` deletes them: the replicate task
    upstream of the wait must then run again to add them anew."""

    workflows: Literal["cancel", "leave"] = "cancel"
    replication: Literal["cancel", "leave"] = "leave"


class CampaignConfig(_Strict):
    """A whole multi-site DRP campaign."""

    name: Annotated[str, StringConstraints(pattern=CAMPAIGN_NAME)]
    description: str = Field(default="", max_length=500)
    pipeline: str = Field(min_length=1, description="Pipeline YAML, relative to the campaign file.")
    instrument: Annotated[str, StringConstraints(pattern=INSTRUMENT_NAME)]
    skymap: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    input_collections: list[CollectionName] = Field(min_length=1)
    data_query: str = Field(default="", max_length=2000)
    output_prefix: CollectionName = Field(
        description="Prefix of every output collection, e.g. 'MiniCam/runs/DRP'."
    )
    data_root: str = Field(
        default=".",
        description="Directory that relative butler_repo paths are under; relative to the campaign file. "
        "Environment variables are expanded.",
    )
    work_dir: str = Field(
        default="work",
        description="Campaign work directory (plans, graphs, submit dirs, reports); relative to data_root.",
    )
    failed_quanta_threshold: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Largest fraction of failed quanta a workflow may have and still be accepted.",
    )
    rate_target: RateTarget
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    on_kill: OnKillSettings = Field(default_factory=OnKillSettings)
    replication: ReplicationSettings
    sites: list[SiteConfig] = Field(min_length=1)
    steps: list[StepConfig] = Field(min_length=1)

    # Set by load_campaign: where the file was, so relative paths resolve. Not part of the YAML.
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("data_query")
    @classmethod
    def _query_single_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value or ";" in value:
            raise ValueError("expected a single-line butler query expression without ';'")
        return value

    @model_validator(mode="after")
    def _check_sites_and_steps(self) -> CampaignConfig:
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sites: site names must be unique; repeated: {', '.join(dupes)}")
        hubs = [s.name for s in self.sites if s.role is SiteRole.hub]
        if len(hubs) != 1:
            raise ValueError(f"sites: expected exactly one site with role 'hub', found {len(hubs)} ({hubs})")
        total = math.fsum(s.share for s in self.sites)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"sites: shares must sum to 1.0, they sum to {total:.6g}")
        rses = [s.rse for s in self.sites]
        if len(set(rses)) != len(rses):
            raise ValueError("sites: every site needs its own rse")
        steps = [s.name for s in self.steps]
        dupes = sorted({n for n in steps if steps.count(n) > 1})
        if dupes:
            raise ValueError(f"steps: step names must be unique; repeated: {', '.join(dupes)}")
        return self

    # -- derived views -------------------------------------------------------------------------

    @property
    def hub(self) -> SiteConfig:
        return next(s for s in self.sites if s.role is SiteRole.hub)

    def site(self, name: str) -> SiteConfig:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"campaign {self.name!r} has no site {name!r}; sites: {[s.name for s in self.sites]}")

    def step(self, name: str) -> StepConfig:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"campaign {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}")

    @property
    def base_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    @property
    def data_root_path(self) -> Path:
        root = Path(os.path.expandvars(self.data_root)).expanduser()
        return root if root.is_absolute() else (self.base_dir / root).resolve()

    @property
    def pipeline_path(self) -> Path:
        p = Path(self.pipeline)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def work_path(self) -> Path:
        p = Path(os.path.expandvars(self.work_dir)).expanduser()
        return p if p.is_absolute() else self.data_root_path / p

    def repo_of(self, site: str | SiteConfig) -> str:
        """The butler repo of a site as a path string (or URI, left untouched)."""
        repo = (site if isinstance(site, SiteConfig) else self.site(site)).butler_repo
        if "://" in repo:
            return repo
        p = Path(os.path.expandvars(repo)).expanduser()
        return str(p if p.is_absolute() else self.data_root_path / p)


def _format_loc(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic error location as ``sites[1] (frdf).share``."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "<top level>"


def _pipeline_subsets(path: Path) -> set[str] | None:
    """Subset labels declared in a pipeline YAML, or None if it cannot be read cheaply."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    subsets = doc.get("subsets") if isinstance(doc, dict) else None
    return set(subsets) if isinstance(subsets, dict) else set()


def _restrict_sites(path: Path, declared: Any, keep: list[str]) -> Any:
    if not isinstance(declared, list) or not all(isinstance(s, dict) for s in declared):
        return declared  # let validation report the malformed list
    names = [s.get("name") for s in declared]
    unknown = sorted(set(keep) - set(names))
    if unknown:
        raise CampaignConfigError(f"{path}: sites: the selection names {unknown}, which the campaign "
                                  f"does not define; expected some of {names}")
    hub = next((s.get("name") for s in declared if s.get("role") == SiteRole.hub.value), None)
    if hub is not None and hub not in keep:
        raise CampaignConfigError(f"{path}: sites: the selection {sorted(keep)} leaves out the hub {hub!r}; "
                                  "every campaign runs its global steps and gathers its outputs there")
    kept = [dict(s) for s in declared if s.get("name") in keep]
    total = math.fsum(float(s.get("share", 0) or 0) for s in kept)
    if total > 0:
        for s in kept:
            s["share"] = float(s.get("share", 0) or 0) / total
    return kept


def load_campaign(path: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                  check_pipeline: bool = True, sites: Sequence[str] | None = None) -> CampaignConfig:
    """Read and validate a campaign file.

    ``data_root`` overrides the file's own ``data_root`` (tests and the demo put the
    embedded sites in a scratch directory). With ``check_pipeline`` the pipeline file
    must exist and declare every step's subset. ``sites`` (if not empty) keeps only those
    sites, which must include the hub, and rescales their shares to sum to 1: the
    campaign is planned and run as if the others did not exist.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CampaignConfigError(f"{path}: cannot read campaign file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CampaignConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise CampaignConfigError(f"{path}: expected a mapping of campaign fields at the top level, "
                                  f"got {type(data).__name__}")
    if data_root is not None:
        data = {**data, "data_root": str(data_root)}
    if sites:
        data = {**data, "sites": _restrict_sites(path, data.get("sites"), list(sites))}
    try:
        config = CampaignConfig.model_validate({**data, "source_path": path.resolve()})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            loc = _format_loc(err["loc"], data)
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            # Model-level checks carry no location; their message starts with the field name.
            lines.append(f"{path}: {loc}: {msg}" if err["loc"] else f"{path}: {msg}")
        raise CampaignConfigError("\n".join(lines)) from None

    if check_pipeline:
        pipe = config.pipeline_path
        if not pipe.is_file():
            raise CampaignConfigError(f"{path}: pipeline: file {pipe} does not exist")
        subsets = _pipeline_subsets(pipe)
        if subsets is None:
            raise CampaignConfigError(f"{path}: pipeline: {pipe} is not a readable pipeline YAML")
        for i, step in enumerate(config.steps):
            if step.subset not in subsets:
                raise CampaignConfigError(
                    f"{path}: steps[{i}] ({step.name}).subset: expected one of the pipeline's subsets "
                    f"{sorted(subsets)}, got {step.subset!r}"
                )
    return config

