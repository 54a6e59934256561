"""One night's raws through the real ports: the hub's butler, the local Rucio server and its
daemons, the Replica Monitor ingesting at the sites (``services/nightly.py``).

The campaign copy says FrDF holds every raw (DMTN-213) while its butler starts without
any: the night's datasets must bring it all of them, and UKDF only the raws of the visits
assigned to it. A second pass over the same night adds no file, no rule and no dataset.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import actions, nightly
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.replica.base import RuleRef, replication_progress

from tests.conftest import CAMPAIGN, wait_until

NIGHT = 20240601


@pytest.fixture(scope="module")
def night_ctx(rucio_campaign_factory):
    env = rucio_campaign_factory("nightly")
    env.say_holds_all_raws("frdf")
    cfg = load_campaign(env.campaign_file, data_root=env.data_root)
    ctx = actions.CampaignContext(config=cfg, workflows={}, replica=env.service,
                                  butlers={s.name: SiteButler(s.name, cfg.repo_of(s)) for s in cfg.sites})
    actions.make_plan(cfg, 0)
    return ctx, env


def _held(ctx, site: str) -> Counter:
    """Raws of the night in the site's butler, per visit (any collection)."""
    b = ctx.butlers[site]
    b.refresh()
    refs = b.butler.query_datasets("raw", collections="*", where=f"instrument = 'MiniCam' AND day_obs = {NIGHT}",
                                   find_first=False, explain=False)
    return Counter(int(r.dataId["exposure"]) for r in refs)


def test_a_night_reaches_the_sites_that_need_it_once(night_ctx) -> None:
    ctx, env = night_ctx
    plan = ctx.plan()
    found = nightly.find_night(ctx, NIGHT)
    assert len(found["visits"]) == 6 and found["raws"] == 24
    assert all(sum(t.values()) >= 4 for t in found["visits"].values())  # each detector is in some tract

    assignment = nightly.assign_night(ctx, found)
    placed = {v: s.name for s in plan.sites for v in s.visits}
    assert {int(v): a["site"] for v, a in assignment["visits"].items()} == {v: placed[v] for v in found["visits"]}
    owner = {t: s.name for s in plan.sites for t in s.tracts}
    assert all(owner[a["tract"]] == a["site"] and not a["new"] for a in assignment["visits"].values())
    path = names.night_assignment_path(ctx.config, 0, NIGHT)
    written = path.read_text()

    registered = nightly.register_night(ctx, assignment)
    tracts = {a["tract"] for a in assignment["visits"].values()}
    assert [r["tract"] for r in registered] == sorted(tracts)
    assert sum(r["files"] for r in registered) == 24 and sum(r["new_files"] for r in registered) == 24
    assert all(r["dataset"] == f"Dataset/MiniCam/raw/Tract{r['tract']}/{NIGHT}" for r in registered)

    rules = {site: nightly.replicate_night(ctx, site, assignment) for site in ("usdf", "frdf", "ukdf")}
    assert rules["usdf"] == []  # the hub holds every raw
    assert len(rules["frdf"]) == len(tracts)  # holds_all_raws: every dataset of the night
    ukdf_tracts = {a["tract"] for a in assignment["visits"].values() if a["site"] == "ukdf"}
    assert len(rules["ukdf"]) == len(ukdf_tracts)
    for site in ("frdf", "ukdf"):
        refs = [RuleRef.from_dict(r) for r in rules[site]]
        wait_until(lambda refs=refs: replication_progress(ctx.replica, refs).state == "ok", timeout=300)
        assert nightly.night_rules(ctx, site, NIGHT) == rules[site]
        actions.verify_ingest(ctx, rules[site])

    assert _held(ctx, "frdf") == Counter(dict.fromkeys(found["visits"], 4))
    ukdf_visits = [int(v) for v, a in assignment["visits"].items() if a["site"] == "ukdf"]
    assert ukdf_visits and _held(ctx, "ukdf") == Counter(dict.fromkeys(ukdf_visits, 4))

    # The same night again (a backfill): nothing new anywhere.
    n_rules = len(list(env.root_client.list_replication_rules({"scope": ctx.config.replication.scope})))
    again = nightly.assign_night(ctx, nightly.find_night(ctx, NIGHT))
    assert again["found"] and path.read_text() == written
    assert sum(r["new_files"] for r in nightly.register_night(ctx, again)) == 0
    assert {s: nightly.replicate_night(ctx, s, again) for s in rules} == rules
    assert len(list(env.root_client.list_replication_rules({"scope": ctx.config.replication.scope}))) == n_rules
    assert _held(ctx, "frdf") == Counter(dict.fromkeys(found["visits"], 4))


def test_visits_are_never_moved_and_new_ones_go_by_tract(night_ctx, tmp_path) -> None:
    ctx, _ = night_ctx
    plan = ctx.plan()
    ukdf_tract = plan.site("ukdf").tracts[0]
    frdf_tract = plan.site("frdf").tracts[0]
    # A visit the plan does not know, mostly on a UKDF tract: UKDF, with that home tract.
    night = {"day_obs": 20240609, "visits": {999001: {str(frdf_tract): 1, str(ukdf_tract): 3}}}
    first = nightly.assign_night(ctx, night)
    assert first["visits"]["999001"] == {"site": "ukdf", "tract": ukdf_tract, "new": True}
    # Written once: the same visit is not moved, even if its overlaps now say otherwise.
    night["visits"][999001] = {str(frdf_tract): 4}
    night["visits"][999002] = {str(frdf_tract): 2}
    second = nightly.assign_night(ctx, night)
    assert second["visits"]["999001"]["site"] == "ukdf" and second["visits"]["999002"]["site"] == "frdf"
    recorded = json.loads(names.night_assignment_path(ctx.config, 0, night["day_obs"]).read_text())
    assert set(recorded["visits"]) == {"999001", "999002"}


def test_a_visit_outside_the_regions_is_refused_naming_it(night_ctx) -> None:
    ctx, _ = night_ctx
    with pytest.raises(nightly.NightAssignmentError, match=r"visit 999003 overlaps no tract.*tracts \[4242\]"):
        nightly.assign_night(ctx, {"day_obs": 20240610, "visits": {999003: {"4242": 4}}})
    assert not names.night_assignment_path(ctx.config, 0, 20240610).exists()  # nothing half-written


@pytest.mark.parametrize("when, night", [
    ("2024-06-01T12:00:00+00:00", 20240601),  # the night's first instant (a scheduled run's logical date)
    ("2024-06-02T11:59:59+00:00", 20240601),  # its last
    ("2024-06-02T03:00:00+00:00", 20240601),  # 23:00 in Chile (UTC-4): the middle of the night
    ("2024-06-02T12:00:00+00:00", 20240602),
])
def test_the_night_of_an_instant_is_utc_minus_12h(when, night) -> None:
    from datetime import datetime

    assert names.day_obs_of(datetime.fromisoformat(when)) == night


def test_bad_nights_are_refused() -> None:
    from datetime import datetime

    cfg = load_campaign(CAMPAIGN, check_pipeline=False)
    for bad in (20241301, 2024061, "20240601", True):
        with pytest.raises(names.NameError_, match="day_obs: expected a night as an integer YYYYMMDD"):
            names.night_raw_dataset(cfg, 1, bad)
    with pytest.raises(names.NameError_, match="no time zone"):
        names.day_obs_of(datetime(2024, 6, 1, 12))


def test_a_generation_without_a_plan_is_refused_saying_what_to_run(night_ctx) -> None:
    import dataclasses

    ctx, _ = night_ctx
    other = dataclasses.replace(ctx, generation=7)
    with pytest.raises(nightly.NightAssignmentError, match=r"generation 7 has no plan at .*plan/g7.*plan_campaign"):
        nightly.assign_night(other, {"day_obs": NIGHT, "visits": {1: {"1": 4}}})
    assert not names.night_assignment_path(ctx.config, 7, NIGHT).exists()
