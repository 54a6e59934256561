"""CampaignTaskMixin: how every campaign operator and sensor begins, and how its errors end.

As the Amazon provider's ``AwsBaseHookMixin`` gives its operators and sensors one way to
their hook, this mixin gives the campaign's operators (``operators/drp.py``) and sensors
(``sensors/drp.py``) one preamble, :meth:`CampaignTaskMixin.prepare`:

1. build the hook from the DAG run's Params (:meth:`~CampaignTaskMixin.campaign_hook`;
   none in a dry run, which acts on nothing),
2. decide the skip (:func:`skip_reason`: ``dry_run``, a step or site the Params leave out,
   a site the plan gives no work in the step) and raise ``AirflowSkipException`` with it,
3. get the ``CampaignContext`` the actions take (``CampaignHook.get_conn``).

It also decides how the project's errors (``multisite_drp.errors``) end the task. Every
``execute``, ``execute_complete`` and ``poke`` a subclass defines is wrapped (at class
creation, so no task can forget) by :func:`drp_errors`:

* an ``InputError`` (bad campaign file, Param, connection or extra, refused credentials,
  missing connection) becomes ``AirflowFailException`` with the same message: the task
  fails at once, without retry, since retrying cannot help;
* a ``TransientError`` (a service out of reach) is raised as is: Airflow retries the task.
  These tasks retry with exponential backoff (``retry_exponential_backoff`` 2.0, delays
  capped by ``max_retry_delay`` 1 h) unless the task or the DAG's ``default_args`` say
  otherwise;
* anything else is raised as is, and retried as the task's ``retries`` say.

:meth:`CampaignTaskMixin.warn` raises a warning alert (``hooks/alerts.py``): something
the operator should see that does not fail the task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from multisite_drp.errors import InputError, TransientError
from multisite_drp.hooks.campaign import CampaignHook

if TYPE_CHECKING:
    from multisite_drp.services.actions import CampaignContext

__all__ = ["GROUP_MAP_INDEX", "MIN_DEFERRAL_SECONDS", "RETRY_DEFAULTS", "RUN_STEP1_OFF", "SETTLE_SECONDS", "WRAPPED_METHODS", "CampaignTaskMixin", "drp_errors", "group_id",
           "night_of", "skip_reason"]

#: The retry settings a campaign task gets unless the task or the DAG's default_args set them.
RETRY_DEFAULTS: dict[str, Any] = {"retry_exponential_backoff": 2.0, "max_retry_delay": timedelta(hours=1)}

#: How long a task that would defer first waits in its worker for work that ends soon
#: (``CampaignTaskMixin.settled``). Short work then needs no deferral at all (saving the
#: deferral's round trip: the worker's exit, the trigger's first poll, a new worker), and a
#: trigger cannot fire while the deferring worker is still exiting: Airflow 3.3 then takes
#: the stale exit of the deferred try for a state change made outside it and sends the
#: resumed try to retry (seen four times in one end-to-end run, 30-50 s each; apache/airflow
#: #72716 and #71580 are the same race).
SETTLE_SECONDS = 10.0

#: The least time between a deferral and its trigger's event (the trigger holds an early
#: event until then: ``not_before``). Work that ends just after the task deferred would
#: otherwise fire the trigger while the scheduler has not yet read the deferred try's exit;
#: measured in #72716, that exit was read 6.5 s after the deferral, after the resumed try
#: had started. Costs at most this much on work that ends within it.
MIN_DEFERRAL_SECONDS = 15.0

#: Why a night's step-1 task is skipped when the run's Param ``run_step1`` is off.
RUN_STEP1_OFF = "run_step1 is off: this night's raws only"

#: The methods whose errors :func:`drp_errors` translates, in every subclass that defines them.
WRAPPED_METHODS = ("execute", "execute_complete", "poke")

F = TypeVar("F", bound=Callable[..., Any])

#: What the UI shows as a group task's map index: the group's label (its visits or tracts).
GROUP_MAP_INDEX = "{{ task.group['label'] if task.group is mapping else task.group }}"


def group_id(group: Any) -> int:
    """The group id of a mapped item (``{"group": id, "label": ...}``, what a step's site
    chain is mapped over) or of a plain int."""
    value = group.get("group") if isinstance(group, dict) else group
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"group: expected a group id (an integer >= 0) or a mapped item with one, got {group!r}")
    return value


def night_of(context) -> int:
    """The observing night (``day_obs``) a ``drp_nightly`` task works on: the Param
    ``day_obs`` if set, else the night of the run's logical date
    (``names.day_obs_of``: UTC-12h, so a scheduled or backfilled run of the night that
    begins at 12:00 UTC on D is day_obs D). An ``InputError`` if neither is there."""
    from multisite_drp.campaign import names

    day_obs = (context.get("params") or {}).get("day_obs")
    if day_obs:
        return names.check_day_obs(int(day_obs))
    when = context.get("logical_date")
    if when is None:
        raise InputError("day_obs: the run has no logical date and the Param day_obs is empty; expected a night "
                         "(YYYYMMDD) in the Param, or a run with a logical date (scheduled, backfilled, or "
                         "triggered with one)")
    return names.day_obs_of(when)


def skip_reason(params: dict[str, Any], hook: CampaignHook | None, step: str | None, site: str | None) -> str | None:
    """Why a (step, site) task has nothing to do under these Params, or None if it has."""
    if params.get("dry_run"):
        return "dry_run: planning only, no external action"
    if step and params.get("steps") and step not in params["steps"]:
        return f"{step} is not among the selected steps {params['steps']}"
    if hook is not None and site:
        if site not in {s.name for s in hook.config.sites}:
            return f"site {site} is not among the selected sites {params.get('sites')}"
        if step:
            plan = hook.plan()
            if site not in plan.sites_for(step):
                return f"the plan gives {site} no work in {step} (it runs at {plan.sites_for(step)})"
    return None


def drp_errors(method: F) -> F:
    """Wrap a task method: an ``InputError`` fails the task without retry
    (``AirflowFailException``, same message, the error chained); a ``TransientError`` is
    logged as such and raised for Airflow to retry."""
    if getattr(method, "_drp_errors", False):
        return method

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except InputError as exc:
            raise AirflowFailException(f"{exc} [{type(exc).__name__}: bad input, retrying cannot help]") from exc
        except TransientError as exc:
            self.log.warning("%s: %s (%s: transient; Airflow retries the task with backoff)", self.task_id, exc,
                             type(exc).__name__)
            raise

    wrapper._drp_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class CampaignTaskMixin:
    """Mixin for the campaign's operators and sensors: the hook, the skip, the context, the
    retry defaults and the ending of the project's errors. Put it before the Airflow base:
    ``class X(CampaignTaskMixin, BaseOperator)``."""

    #: The hook class built from the Params (a subclass may swap it, as in AwsBaseHookMixin).
    campaign_hook_class: type[CampaignHook] = CampaignHook

    #: The step and site of the task (None: not tied to one); set by the operator's ``__init__``.
    step: str | None = None
    site: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in WRAPPED_METHODS:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, drp_errors(method))

    @staticmethod
    def with_retry_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with :data:`RETRY_DEFAULTS` filled in where neither the task nor the
        DAG's ``default_args`` set them. An operator's ``__init__`` passes its kwargs through
        this to ``BaseOperator.__init__`` (the mixin has no ``__init__`` of its own: Airflow's
        operator metaclass applies default_args only to ``__init__`` methods of operator classes)."""
        dag_defaults = kwargs.get("default_args") or {}
        return {**{k: v for k, v in RETRY_DEFAULTS.items() if k not in dag_defaults}, **kwargs}

    #: See :data:`SETTLE_SECONDS`; an operator's ``__init__`` takes ``settle_seconds``.
    settle_seconds: float = SETTLE_SECONDS

    #: See :data:`MIN_DEFERRAL_SECONDS`.
    min_deferral_seconds: float = MIN_DEFERRAL_SECONDS

    def not_before(self) -> float:
        """The epoch second before which the trigger this task defers on may not fire."""
        import time

        return time.time() + max(float(self.min_deferral_seconds), 0.0)

    def settled(self, done: Callable[[], bool]) -> bool:
        """Whether ``done()`` became true within ``settle_seconds``, checked at once and then
        at growing intervals (0.5 s up to 2.5 s: a handful of status calls)."""
        import time

        end = time.monotonic() + max(float(self.settle_seconds), 0.0)
        pause = 0.5
        while True:
            if done():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause + 0.5, 2.5)

    #: A task of a night's step (``drp_nightly``'s step 1, ``operators.groups.step_group(night=True)``):
    #: its hook is scoped to the run's night (``names.night_config``), and it runs only with
    #: the Param ``run_step1``.
    night_scoped: bool = False

    def hook_params(self, context) -> dict[str, Any]:
        """The Params the hook is built from (what a trigger carries): the run's, plus the
        night for a night-scoped task."""
        params = dict(context["params"])
        if self.night_scoped:
            params["night"] = night_of(context)
        return params

    def campaign_hook(self, context, **kwargs: Any) -> CampaignHook:
        """The hook for this DAG run's Params (campaign file, data root, sites, generation;
        a night-scoped task's night)."""
        return self.campaign_hook_class.from_params(self.hook_params(context), **kwargs)

    def prepare(self, context) -> tuple[CampaignHook, CampaignContext]:
        """Build the hook, decide the skip (``AirflowSkipException`` with the reason), get the
        context. In a dry run no hook is built: the task is skipped first."""
        params = context["params"]
        if self.night_scoped and not params.get("run_step1"):
            raise AirflowSkipException(RUN_STEP1_OFF)
        hook = None if params.get("dry_run") else self.campaign_hook(context)
        if self.night_scoped and hook is not None:
            from multisite_drp.campaign import names
            from multisite_drp.campaign.plan import plan_complete

            where = names.plan_dir(hook.config, hook.generation)
            if not plan_complete(where):
                raise AirflowSkipException(f"night {hook.night} has no step-1 plan at {where} (no raws that night?)")
        reason = skip_reason(params, hook, self.step, self.site)
        if reason:
            raise AirflowSkipException(reason)
        assert hook is not None  # skip_reason skips every dry run
        return hook, hook.get_conn()

    def warn(self, context, kind: str, text: str, key: str) -> bool:
        """Raise a warning alert of ``kind`` (``hooks.alerts.WARNING_KINDS``) for this task:
        logged, recorded in ``alerts.jsonl`` and sent as the campaign's ``alerts`` say, once
        per ``key``. Never raises: a warning must not fail the task. True if it was new."""
        from multisite_drp.hooks.alerts import warn

        return warn({**context, "task": self}, kind, text, key)
