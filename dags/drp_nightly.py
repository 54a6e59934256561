"""drp_nightly: each observing night's raws, registered in Rucio and at the sites that need them.

**Keyed by night.** One run per observing night (`day_obs`). The Rubin day rolls over at
noon in Chile, taken as UTC-12h: the night `D` is the interval from 12:00 UTC on `D` to
12:00 UTC on `D+1`. The timetable is `CronDataIntervalTimetable("0 12 * * *", UTC)` on
purpose: its data interval is that night, its logical date the night's first instant, and
the run starts when the night is over. (Airflow 3's `@daily` is a trigger timetable whose
data interval has zero width, which would not name a night.) A task's night is the Param
`day_obs` if set, else the night of the logical date.

**Per night.** `assign_visits` finds the night's visits at the hub and assigns each to a
site with the generation's tract regions (the plan's; fixed: a visit the plan already
places keeps its site, a new one goes to the owner of the tract it overlaps most, and an
assignment once written never changes), in `work/nights/g<generation>/<day_obs>.json`.
`register_raws` registers the raws at the hub as Rucio datasets, one per home tract
(`Dataset/<instrument>/raw/Tract<tract>/<day_obs>`). Per remote site, `raws` adds a
rule for each dataset it needs (a site that `holds_all_raws`, FrDF in DMTN-213, needs all;
UKDF the raws of its own visits; the hub holds them already), and `wait_ingested` waits,
deferred, until every rule is OK and the site's butler has ingested every raw. A night
with no raws at the hub is skipped, saying so.

**Step 1 for the night** (Param `run_step1`, off by default). `plan_step1` writes the
night's step-1 plan from the generation's plan and the assignment (the night's visits at
their sites, split into groups as the campaign splits step 1), then `step1` runs it: the
campaign's own step TaskGroup (graph at the hub, inputs, submit, wait, merge, register,
return to USDF, barrier), scoped to the night. Every name is the night's own
(`names.night_config`): campaign `<name>-n<day_obs>`, outputs under
`<output_prefix>/nightly/<day_obs>/step1/<site>/g<generation>/group<NNN>`, work under
`<work_dir>/nights/<day_obs>`; nothing meets the campaign's collections or workflows.
Off, those tasks are skipped and say why.

**Reprocessing is a backfill.** `airflow backfill create --dag-id drp_nightly --from-date
2024-06-01 --to-date 2024-06-03 --reprocess-behavior completed`, or the UI's backfill
dialog. Every task is idempotent: a night done before registers no file and adds no rule
again; its assignment and step-1 plan are read back, and its workflows are found by name,
not submitted again.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup
from multisite_drp.campaign.config import load_campaign
from multisite_drp.notifiers.alert import CampaignAlertNotifier
from multisite_drp.operators.groups import REPLICATION_POOL, step_group
from multisite_drp.operators.nightly import NightOperator
from multisite_drp.operators.params import campaign_params
from multisite_drp.sensors.drp import ReplicationSensor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMPAIGN = os.environ.get(
    "MULTISITE_DRP_CAMPAIGN", str(ROOT / "include" / "campaigns" / "minidrp_embedded.yaml")
)
SHAPE = load_campaign(DEFAULT_CAMPAIGN, check_pipeline=False)
SITES = [s.name for s in SHAPE.sites]
REMOTE = [s.name for s in SHAPE.sites if s.name != SHAPE.hub.name]
STEP1 = SHAPE.steps[0]
#: The first night scheduled (the embedded survey's first night); backfills go further back.
FIRST_NIGHT = datetime.fromisoformat(os.environ.get("MULTISITE_DRP_FIRST_NIGHT", "2024-06-01")).replace(
    hour=12, tzinfo=UTC)

with DAG(
    dag_id="drp_nightly",
    description="Each night's raws to the sites that need them (Rucio), verified ingested",
    schedule=CronDataIntervalTimetable("0 12 * * *", timezone="UTC"),
    start_date=FIRST_NIGHT,
    catchup=False,
    max_active_runs=2,
    tags=["drp", "multisite", "nightly"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "on_failure_callback": CampaignAlertNotifier(),
    },
    params={
        **campaign_params(DEFAULT_CAMPAIGN),
        "day_obs": Param(None, type=["null", "integer"], minimum=19700101, maximum=29991231,
                         description="The night (YYYYMMDD); empty: the night of the run's logical date (UTC-12h)."),
        "run_step1": Param(False, type="boolean",
                           description=f"Also run {STEP1.name} for the night's visits at their sites (the campaign's "
                                       "step TaskGroup, in the night's own collections); off: raws only."),
    },
) as dag:
    assign = NightOperator(
        task_id="assign_visits", what="assign", retries=0,
        doc_md="Find the night's visits at the hub and assign each to a site and home tract with the "
               "generation's tract regions (written once; never moved).")
    register = NightOperator(
        task_id="register_raws", what="register", pool=REPLICATION_POOL,
        doc_md="Register the night's raws at the hub as Rucio datasets, one per home tract "
               "(Dataset/<instrument>/raw/Tract<tract>/<day_obs>).")
    assign >> register
    plan_step1 = NightOperator(
        task_id=f"plan_{STEP1.name}", what="plan", retries=0,
        doc_md=f"With run_step1: the night's {STEP1.name} plan (its visits at their sites, in groups), written once "
               "in the night's scope; found on a rerun. Skipped otherwise.")
    step1, _ = step_group(STEP1.name, SITES, is_global=False, description=f"{STEP1.name} for the night's visits",
                          wait_timeout=timedelta(days=2), workflow_timeout=timedelta(days=2), night=True)
    register >> plan_step1 >> step1
    for site in REMOTE:
        with TaskGroup(site, tooltip=f"The night's raws {site} needs"):
            rules = NightOperator(
                task_id="raws", what="replicate", site=site, pool=REPLICATION_POOL,
                doc_md=f"A rule to {site} for each of the night's datasets it needs (all of them if it holds "
                       "every raw; else those of its own tracts).")
            wait = ReplicationSensor(
                task_id="wait_ingested", site=site, kind="night", timeout=timedelta(days=2),
                doc_md=f"Wait (deferred) until the night's rules to {site} are OK and its butler has ingested "
                       "every raw.")
            register >> rules >> wait >> plan_step1
