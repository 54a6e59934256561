"""The operators of ``drp_nightly``: one night's raws found, assigned, registered, replicated.

Each calls one idempotent function of ``services.nightly`` for the run's night
(``hooks.mixin.night_of``: the Param ``day_obs``, else the night of the logical date), so
a backfilled or cleared night finds its earlier work: the assignment file, the datasets,
the rules, the night's step-1 plan. The wait is ``ReplicationSensor(kind="night")``. Step 1
itself is the campaign's own step TaskGroup, scoped to the night
(``operators.groups.step_group(night=True)``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk.exceptions import AirflowSkipException

from multisite_drp.hooks.links import RucioLink
from multisite_drp.hooks.mixin import RUN_STEP1_OFF, night_of
from multisite_drp.operators.drp import CampaignActionOperator

__all__ = ["NightOperator"]


class NightOperator(CampaignActionOperator):
    """``assign`` (find the night's visits at the hub and assign each to a site and home
    tract; skipped, with the reason, when the hub has no raws that night), ``register``
    (the night's raws as Rucio datasets at the hub) or ``replicate`` (the rules to
    ``site`` for what it needs) or ``plan`` (with the Param ``run_step1``: the night's
    step-1 plan, ``services.nightly.plan_night``)."""

    ui_color = "#fff2cc"
    operator_extra_links = (RucioLink(),)
    WHAT: ClassVar[tuple[str, ...]] = ("assign", "register", "replicate", "plan")

    def __init__(self, *, what: str, site: str | None = None, **kwargs: Any) -> None:
        if what not in self.WHAT:
            raise ValueError(f"NightOperator: what={what!r}; expected one of {list(self.WHAT)}")
        if (what == "replicate") != (site is not None):
            raise ValueError(f"NightOperator: what={what!r} takes {'a site' if what == 'replicate' else 'no site'}")
        super().__init__(site=site, **kwargs)
        self.what = what

    @property
    def links_to_rucio(self) -> bool:  # type: ignore[override]
        return self.what in ("register", "replicate")

    def act(self, ctx, context) -> Any:
        from multisite_drp.campaign import names
        from multisite_drp.services import nightly
        from multisite_drp.services.fileio import read_json

        day_obs = night_of(context)
        if self.what == "assign":
            night = nightly.find_night(ctx, day_obs)
            if not night["visits"]:
                raise AirflowSkipException(f"night {day_obs}: the hub ({ctx.hub}) has no raws of that night")
            return nightly.assign_night(ctx, night)
        assignment = read_json(names.night_assignment_path(ctx.config, ctx.generation, day_obs))
        if assignment is None:
            raise AirflowSkipException(f"night {day_obs}: no assignment (the night has no raws)")
        if self.what == "plan":
            if not context["params"].get("run_step1"):
                raise AirflowSkipException(RUN_STEP1_OFF)
            return nightly.plan_night(ctx, assignment)
        if self.what == "register":
            return nightly.register_night(ctx, assignment)
        return nightly.replicate_night(ctx, self.site, assignment)
