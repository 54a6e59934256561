"""Deterministic names for everything a step creates at a site.

Re-running any task must find its earlier work, so every external name is a pure
function of (campaign, step, site, generation, group) and is checked against the
same strict patterns the config uses before it reaches a collection, a path or a DID.

A step's work at a site is split into submission groups (:mod:`.grouping`); each group
has its own output RUN, graph, submit directory, workflow (request) name and Rucio
datasets, and the step's chain at the site holds the RUNs of all its groups.
"""

from __future__ import annotations

import re
from pathlib import Path

from multisite_drp.errors import InputError

from .config import CAMPAIGN_NAME, COLLECTION_NAME, DATASET_TYPE_NAME, SITE_NAME, STEP_NAME, CampaignConfig

__all__ = ["NameError_", "campaign_chain", "check_day_obs", "day_obs_of", "graph_path", "group_label",
           "night_assignment_path", "night_config", "night_raw_dataset", "output_chain", "output_run", "output_run_pattern", "rucio_dataset", "run_generation", "site_graph_path", "site_work_dir", "submit_dir",
           "workflow_name"]

# Transfers that belong to no single step are named under these pseudo-steps.
PSEUDO_STEPS = ("bootstrap", "raws")

# Rucio DID names: no spaces, no leading separator, bounded length.
RUCIO_NAME = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,249}$"


class NameError_(InputError, ValueError):
    """A name built for a collection, path or DID failed validation."""


def _check(value: str, pattern: str, what: str) -> str:
    if re.fullmatch(pattern, value) is None:
        raise NameError_(f"{what}: {value!r} does not match the expected pattern {pattern}")
    return value


def _parts(config: CampaignConfig, step: str, site: str, generation: int) -> tuple[str, str]:
    _check(step, STEP_NAME, "step")
    _check(site, SITE_NAME, "site")
    config.step(step)
    config.site(site)
    if not isinstance(generation, int) or generation < 0:
        raise NameError_(f"generation: expected an integer >= 0, got {generation!r}")
    return step, site


def group_label(group: int) -> str:
    if not isinstance(group, int) or group < 0 or group > 999:
        raise NameError_(f"group: expected an integer 0..999, got {group!r}")
    return f"group{group:03d}"


def output_chain(config: CampaignConfig, step: str, site: str) -> str:
    """CHAINED output collection of a step at a site: ``{output_prefix}/{step}/{site}``."""
    _parts(config, step, site, 0)
    return _check(f"{config.output_prefix}/{step}/{site}", COLLECTION_NAME, "output collection")


def output_run(config: CampaignConfig, step: str, site: str, generation: int, group: int) -> str:
    """RUN collection of one group: ``{chain}/g{generation}/group{NNN}``.

    Each submission group needs its own RUN (two submissions cannot extend one run
    concurrently); ``generation`` grows when a step is re-planned or rescued from scratch.
    """
    _parts(config, step, site, generation)
    run = f"{output_chain(config, step, site)}/g{generation}/{group_label(group)}"
    return _check(run, COLLECTION_NAME, "output run")


def output_run_pattern(config: CampaignConfig, step: str) -> str:
    """The butler collection glob matching every group RUN of ``step`` at every site and generation."""
    config.step(step)
    return f"{config.output_prefix}/{step}/*/g*/group*"


def run_generation(run: str) -> int:
    """The generation of an output RUN (``.../g{N}/group{NNN}``)."""
    m = re.search(r"/g(\d+)/group\d{3}$", run)
    if m is None:
        raise NameError_(f"output run: {run!r} is not of the form .../g<generation>/group<NNN>")
    return int(m.group(1))


def submit_dir(config: CampaignConfig, step: str, site: str, generation: int, group: int) -> Path:
    """BPS submit directory of one group: ``work/submit/{step}/{site}/g{gen}/group{NNN}``."""
    _parts(config, step, site, generation)
    return config.work_path / "submit" / step / site / f"g{generation}" / group_label(group)


def rucio_dataset(config: CampaignConfig, step: str, site: str, dataset_type: str, generation: int = 0,
                  group: int | None = None) -> str:
    """Rucio dataset DID name for one type (or role, e.g. 'inputs'/'outputs') of a step's
    group at one site: ``Dataset/{campaign}/g{generation}/{step}/{site}/group{NNN}/{type}``
    in the campaign's scope.

    ``step`` may also be one of :data:`PSEUDO_STEPS` for transfers made before step 1;
    these have no group (``Dataset/{campaign}/g{generation}/{step}/{site}/{type}``). The
    generation is part of the name because a complete dataset is closed in Rucio: a new
    generation's outputs (new RUNs) need datasets of their own.
    """
    if step in PSEUDO_STEPS:
        _check(site, SITE_NAME, "site")
        config.site(site)
        if group is not None:
            raise NameError_(f"group: the {step} transfers have no group; got {group!r}")
    else:
        _parts(config, step, site, 0)
        if group is None:
            raise NameError_(f"group: a dataset of {step} belongs to one of its groups; got None")
    _check(dataset_type, DATASET_TYPE_NAME, "dataset type")
    if not isinstance(generation, int) or generation < 0:
        raise NameError_(f"generation: expected an integer >= 0, got {generation!r}")
    middle = f"{step}/{site}" if group is None else f"{step}/{site}/{group_label(group)}"
    return _check(f"Dataset/{config.name}/g{generation}/{middle}/{dataset_type}", RUCIO_NAME, "rucio dataset")


def workflow_name(config: CampaignConfig, step: str, site: str, generation: int, group: int) -> str:
    """Workflow (BPS payload / PanDA request) name: ``{campaign}_{step}_{site}_g{generation}_group{NNN}``."""
    _parts(config, step, site, generation)
    return _check(f"{config.name}_{step}_{site}_g{generation}_{group_label(group)}",
                  r"^[A-Za-z][A-Za-z0-9_-]{0,127}$", "workflow name")


def site_work_dir(config: CampaignConfig, site: str) -> Path:
    """A site's own area of the campaign work directory (graphs it runs, logs)."""
    _check(site, SITE_NAME, "site")
    config.site(site)
    return config.work_path / "sites" / site


def graph_path(config: CampaignConfig, step: str, site: str, generation: int, group: int) -> Path:
    """The predicted QuantumGraph of a step's group at a site, kept at the hub as provenance."""
    return config.work_path / "graphs" / f"{workflow_name(config, step, site, generation, group)}.qg"


def site_graph_path(config: CampaignConfig, step: str, site: str, generation: int, group: int) -> Path:
    """The site's copy of a group's graph (what its workflow reads)."""
    return site_work_dir(config, site) / "graphs" / graph_path(config, step, site, generation, group).name


def campaign_chain(config: CampaignConfig) -> str:
    """The hub's CHAINED collection holding every step's outputs: the campaign's output prefix."""
    return _check(config.output_prefix, COLLECTION_NAME, "campaign chain")


def check_day_obs(day_obs: int) -> int:
    """``day_obs`` if it is a night as an integer YYYYMMDD; `NameError_` otherwise."""
    import datetime

    try:
        if isinstance(day_obs, bool) or not isinstance(day_obs, int) or not re.fullmatch(r"[0-9]{8}", str(day_obs)):
            raise ValueError
        datetime.datetime.strptime(str(day_obs), "%Y%m%d")
    except ValueError:
        raise NameError_(f"day_obs: expected a night as an integer YYYYMMDD, got {day_obs!r}") from None
    return day_obs


def day_obs_of(when) -> int:
    """The observing night (``day_obs``, YYYYMMDD) of a UTC instant, in the observatory's
    convention: the Rubin day rolls over at noon in Chile, taken as UTC-12h. So the night
    that begins on the evening of 2024-06-01 (local) is day_obs 20240601, and the instant
    2024-06-01T12:00Z, its first moment, maps to it."""
    import datetime

    if when.tzinfo is None:
        raise NameError_(f"day_obs_of: {when!r} has no time zone; expected an aware UTC datetime")
    return int((when.astimezone(datetime.UTC) - datetime.timedelta(hours=12)).strftime("%Y%m%d"))


def night_raw_dataset(config: CampaignConfig, tract: int, day_obs: int) -> str:
    """The Rucio dataset of one night's raws routed by one tract (the visits whose home
    tract it is): ``Dataset/{instrument}/raw/Tract{tract}/{day_obs}``, Rubin's raw-routing
    convention, in the campaign's scope. Raws are not per generation: a night is
    registered once."""
    if isinstance(tract, bool) or not isinstance(tract, int) or tract < 0:
        raise NameError_(f"tract: expected an integer >= 0, got {tract!r}")
    return _check(f"Dataset/{config.instrument}/raw/Tract{tract}/{check_day_obs(day_obs)}", RUCIO_NAME, "rucio dataset")


def night_config(config: CampaignConfig, day_obs: int) -> CampaignConfig:
    """The campaign scoped to one night's step 1 (``drp_nightly`` with ``run_step1``): the
    same sites, inputs and pipeline, with every name and path of its own, so that the night's
    graphs, workflows, RUNs and Rucio datasets never meet the campaign's:

    * name ``{campaign}-n{day_obs}`` (workflow, request and command names, Rucio datasets);
    * output prefix ``{output_prefix}/nightly/{day_obs}`` (chains and RUNs);
    * work directory ``{work_dir}/nights/{day_obs}`` (its plan, submit directories, graphs);
    * steps: the campaign's first step only, which must be visit-sharded.

    Every other name derives from these, by the functions of this module."""
    day_obs = check_day_obs(day_obs)
    first = config.steps[0]
    if first.sharding.value != "visit":
        raise NameError_(f"{config.source_path}: steps[0] ({first.name}) is {first.sharding.value}-sharded; a "
                         "night's step 1 needs the campaign's first step to be visit-sharded")
    return config.model_copy(update={
        "name": _check(f"{config.name}-n{day_obs}", CAMPAIGN_NAME, "night campaign name"),
        "output_prefix": _check(f"{config.output_prefix}/nightly/{day_obs}", COLLECTION_NAME, "night output prefix"),
        "work_dir": str(config.work_path / "nights" / str(day_obs)),
        "steps": [first],
    })


def night_assignment_path(config: CampaignConfig, generation: int, day_obs: int) -> Path:
    """Where a night's visits are assigned to sites with the generation's tract regions:
    ``nights/g{generation}/{day_obs}.json`` in the work dir (what ``drp_nightly`` writes;
    outside the plan directory, which a plan writer replaces whole)."""
    return config.work_path / "nights" / f"g{int(generation)}" / f"{check_day_obs(day_obs)}.json"


def plan_dir(config: CampaignConfig, generation: int = 0) -> Path:
    """Where the plan of a generation lives (plan.json, BPS configs, sky map): what every task reads."""
    return config.work_path / "plan" / f"g{int(generation)}"


def report_dir(config: CampaignConfig, generation: int = 0) -> Path:
    """Where the campaign report of a generation is written (report.json, report.md)."""
    return config.work_path / "report" / f"g{int(generation)}"


#: The stack commands the DAG itself runs (not a workflow's jobs): graph builds, merges, registrations.
COMMAND_KINDS = ("qgraph", "merge", "register")
#: A command's name: the idempotency key of the command-runner port (``services.commands``).
COMMAND_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,159}$"
#: Kubernetes object names (DNS-1123 label: what a pod's hostname must also be) are at most 63 characters.
POD_NAME_MAX = 63


def command_name(config: CampaignConfig, step: str, site: str, generation: int, group: int, what: str) -> str:
    """A stack command's name: ``{campaign}_{step}_{site}_g{generation}_group{NNN}_{what}``,
    ``what`` one of :data:`COMMAND_KINDS`. The same (campaign, step, site, generation,
    group, what) always gives the same name, so a retried task finds its predecessor."""
    _parts(config, step, site, generation)
    if what not in COMMAND_KINDS:
        raise NameError_(f"command kind: expected one of {list(COMMAND_KINDS)}, got {what!r}")
    return _check(f"{config.name}_{step}_{site}_g{generation}_{group_label(group)}_{what}", COMMAND_NAME,
                  "command name")


def pod_name(name: str) -> str:
    """The Kubernetes pod of a command: ``name`` lowercased to DNS-1123 (``[a-z0-9-]``,
    starting with a letter), cut to fit :data:`POD_NAME_MAX` with the first 10 hex digits
    of its SHA-256 appended, so two names that sanitise or truncate alike still differ."""
    import hashlib

    _check(name, COMMAND_NAME, "command name")
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    body = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")
    body = body[: POD_NAME_MAX - len(digest) - 1].rstrip("-")
    return _check(f"{body}-{digest}", r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", "pod name")


def command_dir(config: CampaignConfig, site: str) -> Path:
    """Where the embedded command runner keeps one record directory per command name."""
    return site_work_dir(config, site) / "commands"
