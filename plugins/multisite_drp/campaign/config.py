"""Campaign configuration: the YAML an operator writes, validated before anything runs.

A campaign file names the pipeline, the input data, the sites that share the work
and the steps to run. Everything here is checked before any external action: a bad
file fails with a message naming the file, the field and what was expected, and
every name that later reaches a collection, a path or a command line is held to a
strict pattern so it cannot smuggle in a separator, a space or a shell character.

The file is read by :mod:`.safe_yaml` (1 MiB cap, strict UTF-8, no duplicate keys, no
anchors/aliases/merge keys, bounded nesting), validated with strict types (no string or
boolean is coerced into a number; numbers are finite), its paths are held inside the
allowed roots the caller passes (:mod:`.paths`; nothing is environment-expanded), its
``data_query`` must be one complete butler expression (:mod:`.query`), and with
``check_pipeline`` its steps must agree with the pipeline's dataflow (:mod:`.dataflow`).

No Airflow imports: this module is the domain layer.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

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

from .paths import (
    AllowedRoots,
    PathError,
    check_campaign_paths,
    check_pipeline_files,
    require_inside,
    roots_or_none,
)
from .query import QueryError, check_balanced
from .safe_yaml import YamlInputError, load_yaml

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
    "check_campaign_file",
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
#: Node limit for a pipeline YAML (aliases counted expanded); a campaign file keeps safe_yaml's default.
PIPELINE_MAX_NODES = 50_000
#: Largest byte count a size may be (1 PB): far above any dataset, far below an overflow.
MAX_BYTES_ESTIMATE = 10**15
#: No control character, no environment variable, no home directory: a path is used as written.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: In free text (titles, descriptions, echoed in logs and reports): no control, bidirectional or
#: zero-width character that could make a line read as something else.
_TEXT_TRICKS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _plain_text(value: str) -> str:
    m = _TEXT_TRICKS.search(value)
    if m:
        raise ValueError(f"character U+{ord(m.group()):04X} at position {m.start() + 1} is not allowed; expected "
                         "plain text without control, bidirectional or zero-width characters")
    return value


def _plain_path(value: str) -> str:
    """A path as written: no control character, no ``$`` (never expanded), no leading ``~``."""
    if _CONTROL.search(value):
        raise ValueError("expected a path without control characters")
    if "$" in value:
        raise ValueError("environment variables are not expanded; expected the path itself, without '$'")
    if value.startswith("~"):
        raise ValueError("'~' is not expanded; expected an absolute path or one relative to the campaign file")
    return value


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
    # strict: no str/bool -> number, no number -> str, no str -> bool (enums opt out per field so
    # their YAML strings parse); ints are accepted where floats are meant, bools never.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False, strict=True,
                              allow_inf_nan=False)


class SiteConnections(_Strict):
    """Airflow connection ids for the outside systems a site exposes.

    ``commands`` (optional) runs the stack commands the DAG itself starts (graph builds,
    merges, registrations): unset, they run as local subprocesses of the Airflow worker
    (the embedded adapter); a connection of adapter ``kubernetes`` runs each in a pod of
    the site's cluster (``hooks.pods``)."""

    butler: ConnId
    replica: ConnId
    workflow: ConnId
    commands: ConnId | None = None


class SiteConfig(_Strict):
    """One Data Facility."""

    name: SiteName
    title: str = Field(default="", max_length=80, description="Human name, e.g. 'FrDF (CC-IN2P3)'.")
    role: SiteRole = Field(strict=False)
    butler_repo: str = Field(
        min_length=1, max_length=1024,
        description="Butler repository: a path (relative to the campaign's data_root) or a URI.",
    )
    rse: Annotated[str, StringConstraints(pattern=RSE_NAME)]
    compute_site: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)]
    compute_cloud: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)] | None = None
    queue: Annotated[str, StringConstraints(pattern=COMPUTE_SITE)] | None = None
    share: float = Field(gt=0.0, le=1.0, description="Fraction of the survey's work this site processes.")
    holds_all_raws: bool = Field(
        default=False,
        description="The site already holds every raw, with the hub's dataset IDs (DMTN-213: USDF and FrDF). "
        "No raw is replicated to it; the distribution checks its butler has those of its visits. "
        "The hub always does.",
    )
    connections: SiteConnections

    @field_validator("butler_repo")
    @classmethod
    def _repo_is_plain(cls, value: str) -> str:
        if any(c in value for c in "\n\r\t;|&$`<>\"'") or value.strip() != value or _CONTROL.search(value):
            raise ValueError("expected a path or URI with no whitespace or shell characters")
        if value.startswith("~"):
            raise ValueError("'~' is not expanded; expected a path relative to data_root, an absolute path or a URI")
        return value

    _title_plain = field_validator("title")(classmethod(lambda cls, v: _plain_text(v)))


class StepConfig(_Strict):
    """One DRP step: a pipeline subset run at every site (or at the hub, if global)."""

    name: StepName
    subset: Annotated[str, StringConstraints(pattern=STEP_NAME)]
    sharding: Sharding = Field(strict=False)
    description: str = Field(default="", max_length=200)
    requires: list[DatasetTypeName] = Field(
        default_factory=list, max_length=200,
        description="Dataset types that must be present at a site before the step runs there. Every output "
        "of a step returns to the hub (DESIGN decision 4).",
    )
    max_group_size: int | None = Field(
        default=None, gt=0, le=10_000_000,
        description="This step's bound on a submission group, in quanta-equivalents (detector-visits for a visit "
                    "step, patches for a tract step); default: planner.max_group_size.")

    _description_plain = field_validator("description")(classmethod(lambda cls, v: _plain_text(v)))

    @field_validator("requires")
    @classmethod
    def _requires_unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({t for t in value if value.count(t) > 1})
        if dupes:
            raise ValueError(f"expected each dataset type once; repeated: {', '.join(dupes)}")
        return value

    @property
    def is_global(self) -> bool:
        return self.sharding is Sharding.global_


class RateTarget(_Strict):
    """The processing rate the campaign must demonstrate (the seed's fifth milestone)."""

    quanta_per_hour: float = Field(gt=0.0, le=1e12)
    visits_per_hour: float | None = Field(default=None, gt=0.0, le=1e12)


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

    method: PartitionMethod = Field(default=PartitionMethod.graph, strict=False)
    dataset_bytes: dict[DatasetTypeName, Annotated[int, Field(gt=0, le=MAX_BYTES_ESTIMATE)]] = Field(
        default_factory=dict,
        description="Estimated bytes per dataset of each type, for the transfer plan; "
        "types not listed use default_dataset_bytes.",
    )
    default_dataset_bytes: int = Field(default=1_000_000, gt=0, le=MAX_BYTES_ESTIMATE)
    max_group_size: int = Field(
        default=50_000, gt=0, le=10_000_000,
        description="Largest submission group (one graph, one workflow) in quanta-equivalents: detector-visits for a "
                    "visit step, patches for a tract step. A step may set its own (steps[].max_group_size).",
    )
    cluster_by: dict[Literal["visit", "tract"], Annotated[list[DimensionName], Field(min_length=1, max_length=8)]] = Field(
        default_factory=lambda: {"visit": ["visit", "exposure"], "tract": ["tract"]},
        description="BPS clustering per sharding: a task's quanta become one job per value of the first of "
        "these dimensions the task has (visit steps: per visit, raw-level tasks per exposure). A test bed "
        "with millisecond quanta may cluster by instrument / skymap (one job per task).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    partition_trials: int = Field(
        default=48, ge=1, le=1000,
        description="METIS runs (seeds seed .. seed+N-1) the graph method refines and keeps the best of.",
    )
    share_tolerance: float = Field(
        default=0.002, gt=0.0, lt=0.5,
        description="Largest |achieved - target| share the planner's balancing passes aim for.",
    )
    objective: Literal["all_crossings", "hub_free"] = Field(
        default="all_crossings",
        description="What the graph partition and the visit assignment minimise: 'all_crossings' counts every "
        "PVI a site other than the visit's needs (once per visit, detector and site); 'hub_free' counts only "
        "those whose destination is not the hub, as the plan's cross_site_bytes does (every output returns to "
        "the hub, so PVIs sent there cost no transfer): it favours the hub's region between the remote ones. "
        "METIS's edge weights stay the symmetric proxy; the refinement, the trial ranking, the exact split of a "
        "small sky and the visit balancing use the chosen count (DESIGN 55).",
    )
    orphan_visits: str = Field(
        default="error", pattern=r"^(error|nearest|drop)$",
        description="Visits that overlap no tract: 'error' (fail naming them), 'nearest' (give each to "
        "the site owning the nearest tract; no coadd uses them) or 'drop' (leave them out of the plan).",
    )

    @field_validator("cluster_by")
    @classmethod
    def _dims_unique(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for sharding, dims in value.items():
            if len(set(dims)) != len(dims):
                raise ValueError(f"{sharding}: expected each dimension once, got {dims}")
        return value


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


EMAIL = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$"


class AlertSettings(_Strict):
    """Where an alert goes besides the log and ``alerts.jsonl``: by e-mail through the SMTP
    provider's ``SmtpNotifier`` (an Airflow connection of type ``smtp``: host, port, login,
    password, extra ``from_email``) and to Slack through the Slack provider's
    ``SlackWebhookNotifier`` (a connection of type ``slackwebhook``: the webhook URL, its
    token as the password). Failures and missed deadlines always go; warnings (a STUCK
    rule, a restarted workflow, an accepted partial success) too unless ``warnings`` is
    false. Connection ids only: the secrets stay in Airflow."""

    smtp_conn_id: ConnId | None = Field(default=None, description="The SMTP connection alerts are mailed through.")
    email_to: list[Annotated[str, StringConstraints(pattern=EMAIL)]] = Field(
        default_factory=list, max_length=50, description="Who gets the alert mails (required with smtp_conn_id).")
    slack_webhook_conn_id: ConnId | None = Field(
        default=None, description="The Slack incoming-webhook connection alerts are posted through.")
    warnings: bool = Field(
        default=True,
        description="Send warning alerts (STUCK rule, workflow restarted, partial success accepted) by mail and "
        "Slack too; false keeps them in the log and alerts.jsonl only.",
    )
    send_seconds: float = Field(
        default=10.0, gt=0.0, le=120.0,
        description="Longest time a send may take (connect to last byte); past it the task's failure handling "
        "goes on without it.",
    )
    run_deadline_hours: float | None = Field(
        default=None, gt=0.0, le=24 * 366.0,
        description="Alert (Airflow DeadlineAlert, in the triggerer) when a campaign run is still not finished "
        "this many hours after it was queued. Read from the campaign file the DAG is parsed with.",
    )

    @model_validator(mode="after")
    def _recipients(self) -> AlertSettings:
        if self.smtp_conn_id and not self.email_to:
            raise ValueError("alerts.email_to is empty but alerts.smtp_conn_id is set; expected at least one address")
        return self


class OnKillSettings(_Strict):
    """What a wait that is killed (its task marked failed or cleared) does to the work it
    waits on. ``workflows``: ``cancel`` stops the workflow's jobs (embedded runner or PanDA
    request), ``leave`` lets them run on. ``replication``: ``leave`` keeps the rules (Rucio
    goes on; a cleared wait finds them again), ``cancel`` deletes them as Rucio's API does
    (softly: each expires within the hour, then Rucio removes it); the replicate task run
    again before that keeps the same rule (its lifetime restored), after it adds a new one."""

    workflows: Literal["cancel", "leave"] = "cancel"
    replication: Literal["cancel", "leave"] = "leave"


class CampaignConfig(_Strict):
    """A whole multi-site DRP campaign."""

    name: Annotated[str, StringConstraints(pattern=CAMPAIGN_NAME)]
    description: str = Field(default="", max_length=500)
    pipeline: str = Field(min_length=1, max_length=4096,
                          description="Pipeline YAML, relative to the campaign file; inside the allowed roots.")
    instrument: Annotated[str, StringConstraints(pattern=INSTRUMENT_NAME)]
    skymap: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    input_collections: list[CollectionName] = Field(min_length=1)
    data_query: str = Field(default="", max_length=2000)
    output_prefix: CollectionName = Field(
        description="Prefix of every output collection, e.g. 'MiniCam/runs/DRP'."
    )
    data_root: str = Field(
        default=".", min_length=1, max_length=4096,
        description="Directory that relative butler_repo paths are under; relative to the campaign file; inside "
        "the allowed roots. Used as written: no environment variable or '~' is expanded.",
    )
    work_dir: str = Field(
        default="work", min_length=1, max_length=4096,
        description="Campaign work directory (plans, graphs, submit dirs, reports); relative to data_root and "
        "inside it.",
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
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    replication: ReplicationSettings
    sites: list[SiteConfig] = Field(min_length=1)
    steps: list[StepConfig] = Field(min_length=1)

    # Set by load_campaign: where the file was, so relative paths resolve. Not part of the YAML.
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("data_query")
    @classmethod
    def _query_single_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value or ";" in value or _CONTROL.search(value):
            raise ValueError("expected a single-line butler query expression without ';'")
        try:
            return check_balanced(value)  # the butler's parser runs in load_campaign(check_pipeline=True)
        except QueryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("pipeline", "data_root", "work_dir")
    @classmethod
    def _paths_plain(cls, value: str) -> str:
        return _plain_path(value)

    _description_plain = field_validator("description")(classmethod(lambda cls, v: _plain_text(v)))

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
        subsets = [s.subset for s in self.steps]
        for sub in dict.fromkeys(s for s in subsets if subsets.count(s) > 1):
            twice = [f"steps[{i}] ({s.name})" for i, s in enumerate(self.steps) if s.subset == sub]
            raise ValueError(f"steps: subset {sub!r} is planned twice ({', '.join(twice)}); expected each "
                             "pipeline subset in one step")
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
        root = Path(self.data_root)
        return root if root.is_absolute() else (self.base_dir / root).resolve()

    @property
    def pipeline_path(self) -> Path:
        p = Path(self.pipeline)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def work_path(self) -> Path:
        p = Path(self.work_dir)
        return p if p.is_absolute() else self.data_root_path / p

    def repo_of(self, site: str | SiteConfig) -> str:
        """The butler repo of a site as a path string (or URI, left untouched)."""
        repo = (site if isinstance(site, SiteConfig) else self.site(site)).butler_repo
        if "://" in repo:
            return repo
        p = Path(repo)
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


def _error(path: Path, exc: Exception) -> CampaignConfigError:
    """A loader or path error as a CampaignConfigError (its message already starts with the file)."""
    return CampaignConfigError(str(exc))


def _read_pipeline(config_path: Path, pipe: Path) -> Any:
    """The pipeline YAML through the safe loader (anchors allowed, bounded, as lsst.pipe.base allows)."""
    try:
        return load_yaml(pipe, what="pipeline", aliases=True, max_nodes=PIPELINE_MAX_NODES)
    except YamlInputError as exc:
        raise CampaignConfigError(f"{config_path}: pipeline: {exc}") from None


def _pipeline_subsets(config_path: Path, pipe: Path, doc: Any) -> set[str]:
    """Subset labels the pipeline declares; a document that is not a pipeline is refused, naming it."""
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not (isinstance(tasks, dict) or "imports" in doc):
        raise CampaignConfigError(
            f"{config_path}: pipeline: {pipe} is not a pipeline (no 'tasks' mapping or 'imports'); expected a "
            "pipeline YAML with description, tasks and subsets")
    subsets = doc.get("subsets")
    return set(subsets) if isinstance(subsets, dict) else set()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    # Rescale only real numbers: anything else is left for validation to report (never coerced).
    if all(_is_number(s.get("share")) and s["share"] > 0 for s in kept):
        total = math.fsum(s["share"] for s in kept)
        for s in kept:
            s["share"] = s["share"] / total
    return kept


def _validation_message(path: Path, exc: ValidationError, data: Any) -> str:
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
    return "\n".join(lines)


def load_campaign(path: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                  check_pipeline: bool = True, sites: Sequence[str] | None = None,
                  allowed_roots: AllowedRoots | Sequence[str | os.PathLike[str]] | None = None) -> CampaignConfig:
    """Read and validate a campaign file; every problem is a :class:`CampaignConfigError`.

    ``data_root`` overrides the file's own ``data_root`` (tests and the demo put the
    embedded sites in a scratch directory). ``sites`` (if not empty) keeps only those
    sites, which must include the hub, and rescales their shares to sum to 1: the
    campaign is planned and run as if the others did not exist.

    ``allowed_roots`` (what the deployment declares; the glue always passes them): the
    campaign file (checked before it is read), the pipeline and every file it imports,
    ``data_root`` and absolute butler repositories must lie inside them
    (:mod:`.paths`). None skips that check (trusted callers: tests, scripts run by an
    operator); ``work_dir`` and relative repos must stay inside ``data_root`` either way.

    ``check_pipeline`` (full validation, what the DAG's ``validate_campaign`` runs): the
    pipeline must be a pipeline declaring every step's subset; ``data_query`` must parse
    with the butler's own parser; the steps must agree with the pipeline's dataflow
    (every ``requires`` made by an earlier step or an input of the pipeline, no step
    consuming what a later step makes, no type made by two steps; read with
    ``lsst.pipe.base`` only after the root check); ``planner.cluster_by`` must name
    dimensions of the universe. Without it nothing heavy is imported (the DAG's parse).
    """
    path = Path(path)
    try:
        _plain_path(os.fspath(path))
    except ValueError as exc:
        raise CampaignConfigError(f"{path}: campaign file: {exc}") from None
    roots = _roots(path, allowed_roots)
    if roots is not None:
        try:
            check_campaign_file(path, roots)
        except PathError as exc:
            raise _error(path, exc) from None
    try:
        data = load_yaml(path, what="campaign file")
    except YamlInputError as exc:
        raise _error(path, exc) from None
    if not isinstance(data, dict):
        raise CampaignConfigError(f"{path}: expected a mapping of campaign fields at the top level, "
                                  f"got {type(data).__name__}")
    if data_root is not None:
        data = {**data, "data_root": os.fspath(data_root)}
    if sites:
        data = {**data, "sites": _restrict_sites(path, data.get("sites"), list(sites))}
    try:
        config = CampaignConfig.model_validate({**data, "source_path": path.resolve()})
    except ValidationError as exc:
        raise CampaignConfigError(_validation_message(path, exc, data)) from None
    try:
        check_campaign_paths(config, path, roots)
    except PathError as exc:
        raise _error(path, exc) from None

    pipe = config.pipeline_path
    doc = None
    if roots is not None and pipe.is_file():
        # What lsst.pipe.base will open (imports, config files) must be inside the roots too.
        doc = _read_pipeline(path, pipe)
        try:
            check_pipeline_files(pipe, doc, roots, str(path), lambda p: _read_pipeline(path, p))
        except PathError as exc:
            raise _error(path, exc) from None
    if check_pipeline:
        _check_fully(path, config, pipe, doc)
    return config


def _roots(path: Path, allowed_roots: Any) -> AllowedRoots | None:
    try:
        return roots_or_none(allowed_roots)
    except PathError as exc:
        raise CampaignConfigError(f"{path}: {exc}") from None


def check_campaign_file(path: Path, roots: AllowedRoots) -> None:
    """The campaign file itself lies inside the allowed roots (checked before it is read)."""
    require_inside(path, roots, f"{path}: campaign file", str(path))


def _check_fully(path: Path, config: CampaignConfig, pipe: Path, doc: Any) -> None:
    """The ``check_pipeline`` checks of :func:`load_campaign` (pipeline, query, dataflow, dimensions)."""
    if not pipe.is_file():
        raise CampaignConfigError(f"{path}: pipeline: file {pipe} does not exist")
    subsets = _pipeline_subsets(path, pipe, doc if doc is not None else _read_pipeline(path, pipe))
    for i, step in enumerate(config.steps):
        if step.subset not in subsets:
            raise CampaignConfigError(
                f"{path}: steps[{i}] ({step.name}).subset: expected one of the pipeline's subsets "
                f"{sorted(subsets)}, got {step.subset!r}"
            )
    from .query import parse_query  # imports the butler

    try:
        parse_query(config.data_query)
    except QueryError as exc:
        raise CampaignConfigError(f"{path}: data_query: {exc}") from None
    from .dataflow import DataflowError, check_dataflow, dataflow_from_pipeline

    try:
        flow = dataflow_from_pipeline(config)
        problems = check_dataflow(config, flow)
    except DataflowError as exc:
        raise CampaignConfigError(str(exc)) from None
    if problems:
        raise CampaignConfigError("\n".join(f"{path}: {p}" for p in problems))
    from lsst.daf.butler import DimensionUniverse

    known = set(DimensionUniverse().getStaticDimensions().names)
    for sharding, dims in config.planner.cluster_by.items():
        unknown = [d for d in dims if d not in known]
        if unknown:
            raise CampaignConfigError(f"{path}: planner.cluster_by.{sharding}: {unknown} are not dimensions; "
                                      f"expected some of {sorted(known)}")
