"""Deterministic names for everything a step creates at a site.

Re-running any task must find its earlier work, so every external name is a pure
function of (campaign, step, site, generation[, group]) and is checked against the
same strict patterns the config uses before it reaches a collection, a path or a DID.
"""

from __future__ import annotations

import re
from pathlib import Path

from multisite_drp.errors import InputError

from .config import COLLECTION_NAME, DATASET_TYPE_NAME, SITE_NAME, STEP_NAME, CampaignConfig

__all__ = ["NameError_", "campaign_chain", "graph_path", "group_label", "output_chain", "output_run",
           "rucio_dataset", "site_work_dir", "submit_dir", "workflow_name"]

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


def output_run(config: CampaignConfig, step: str, site: str, generation: int = 0, group: int | None = None) -> str:
    """RUN collection: ``{chain}/g{generation}``, or ``{chain}/g{generation}/group{NNN}`` for a group.

    Each BPS submission group needs its own RUN (two submissions cannot extend one run
    concurrently), so the submit YAML always uses the group form; ``generation`` grows
    when a step is re-planned or rescued from scratch.
    """
    _parts(config, step, site, generation)
    run = f"{output_chain(config, step, site)}/g{generation}"
    if group is not None:
        run += "/" + group_label(group)
    return _check(run, COLLECTION_NAME, "output run")


def submit_dir(config: CampaignConfig, step: str, site: str, generation: int = 0, group: int | None = None) -> Path:
    """BPS submit directory under the campaign work dir: ``work/submit/{step}/{site}/g{gen}[/groupNNN]``."""
    _parts(config, step, site, generation)
    p = config.work_path / "submit" / step / site / f"g{generation}"
    return p / group_label(group) if group is not None else p


def rucio_dataset(config: CampaignConfig, step: str, site: str, dataset_type: str, generation: int = 0) -> str:
    """Rucio dataset DID name for one type (or role, e.g. 'inputs'/'outputs') of a step at one site:
    ``Dataset/{campaign}/g{generation}/{step}/{site}/{type}`` in the campaign's scope.

    ``step`` may also be one of :data:`PSEUDO_STEPS` for transfers made before step 1. The
    generation is part of the name because a complete dataset is closed in Rucio: a new
    generation's outputs (new RUNs) need datasets of their own.
    """
    if step in PSEUDO_STEPS:
        _check(site, SITE_NAME, "site")
        config.site(site)
    else:
        _parts(config, step, site, 0)
    _check(dataset_type, DATASET_TYPE_NAME, "dataset type")
    if not isinstance(generation, int) or generation < 0:
        raise NameError_(f"generation: expected an integer >= 0, got {generation!r}")
    return _check(f"Dataset/{config.name}/g{generation}/{step}/{site}/{dataset_type}", RUCIO_NAME, "rucio dataset")


def workflow_name(config: CampaignConfig, step: str, site: str, generation: int = 0) -> str:
    """Workflow (BPS payload / PanDA request) name: ``{campaign}_{step}_{site}_g{generation}``."""
    _parts(config, step, site, generation)
    return _check(f"{config.name}_{step}_{site}_g{generation}", r"^[A-Za-z][A-Za-z0-9_-]{0,127}$", "workflow name")


def site_work_dir(config: CampaignConfig, site: str) -> Path:
    """A site's own area of the campaign work directory (graphs it runs, logs)."""
    _check(site, SITE_NAME, "site")
    config.site(site)
    return config.work_path / "sites" / site


def graph_path(config: CampaignConfig, step: str, site: str, generation: int = 0) -> Path:
    """The predicted QuantumGraph of a step at a site, kept at the hub as provenance."""
    return config.work_path / "graphs" / f"{workflow_name(config, step, site, generation)}.qg"


def campaign_chain(config: CampaignConfig) -> str:
    """The hub's CHAINED collection holding every step's outputs: the campaign's output prefix."""
    return _check(config.output_prefix, COLLECTION_NAME, "campaign chain")


def plan_dir(config: CampaignConfig, generation: int = 0) -> Path:
    """Where the plan of a generation lives (plan.json, BPS configs, sky map): what every task reads."""
    return config.work_path / "plan" / f"g{int(generation)}"


def report_dir(config: CampaignConfig, generation: int = 0) -> Path:
    """Where the campaign report of a generation is written (report.json, report.md)."""
    return config.work_path / "report" / f"g{int(generation)}"
