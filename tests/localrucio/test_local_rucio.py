"""The local Rucio deployment (include/localrucio) against itself: a real PostgreSQL, the
Rucio 41.5.1 server under gunicorn, the daemons process and the local-copy transfertool,
driven with rucio-clients from the project venv as a site account.

Its own root (var/rucio-test-lr), built from nothing at the start of the module and
stopped at the end. Run with -s to see the measured start-up and rule latencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from localrucio import LocalRucio, RucioEndpoint, SiteSpec, _procs

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
LR_ROOT = ROOT / "var" / "rucio-test-lr"
SCOPE = "drp"
RULE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def deployment():
    lr = LocalRucio(LR_ROOT)
    lr.down()  # a previous, interrupted run
    shutil.rmtree(LR_ROOT, ignore_errors=True)
    ep = lr.up(reset=True)
    cold = dict(lr.last_up)
    print(f"\n[localrucio] cold start (initdb+bootstrap+server+daemons): {cold['seconds']:.1f}s {cold['steps']}")
    yield lr, ep, cold
    lr.down()


@pytest.fixture(scope="module")
def sites(deployment):
    lr, _, _ = deployment
    scratch = LR_ROOT / f"sites-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    specs = [SiteSpec(site, f"{site.upper()}_LOCAL_DISK", scratch / site / "rse", scratch / site / "butler")
             for site in ("usdf", "frdf")]
    t0 = time.monotonic()
    creds = lr.ensure_sites(SCOPE, specs)
    print(f"[localrucio] ensure_sites (2 sites, first call): {time.monotonic() - t0:.2f}s")
    return specs, creds


def _client(ep: RucioEndpoint, creds: dict[str, str]):
    from rucio.client import Client

    return Client(rucio_host=ep.url, auth_host=ep.url, account=creds["account"], auth_type="userpass",
                  creds={"username": creds["username"], "password": creds["password"]})


def _register(client, spec: SiteSpec, name: str, size: int = 20000) -> bytes:
    """A file at the site's RSE path for scope:name, registered as a replica there."""
    data = os.urandom(size)
    path = spec.rse_root / SCOPE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    client.add_replicas(spec.rse, [{"scope": SCOPE, "name": name, "bytes": len(data),
                                    "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"}])
    return data


def _wait_rule(client, rule_id: str, states: set[str], timeout: float = RULE_TIMEOUT) -> tuple[str, float]:
    t0 = time.monotonic()
    while True:
        state = client.get_replication_rule(rule_id)["state"]
        if state in states or time.monotonic() - t0 > timeout:
            return state, time.monotonic() - t0
        time.sleep(0.1)


def test_up_builds_and_second_up_reuses(deployment):
    lr, ep, cold = deployment
    assert cold["cold"] and {"initdb", "bootstrap", "server", "daemons"} <= set(cold["steps"])
    assert ep.url.startswith("http://127.0.0.1:") and ep.account == "root"
    assert ep.password not in repr(ep)
    before = lr.status()
    assert before["server"]["ping"] and before["daemons"]["running"] and before["postgres"]["running"]

    other = LocalRucio(LR_ROOT)  # as another process would
    ep2 = other.up()
    warm = other.last_up
    print(f"[localrucio] warm start (reuse): {warm['seconds']:.2f}s")
    after = other.status()
    assert warm["reused"] and ep2 == ep
    for part in ("postgres", "server", "daemons"):
        assert after[part]["pid"] == before[part]["pid"], part


def test_ensure_sites_is_idempotent(deployment, sites):
    lr, ep, _ = deployment
    specs, creds = sites
    root = _client(ep, {"account": "root", "username": ep.username, "password": ep.password})
    ids = {s.rse: root.get_rse(s.rse)["id"] for s in specs}
    again = lr.ensure_sites(SCOPE, specs)
    assert again == creds
    assert {s.rse: root.get_rse(s.rse)["id"] for s in specs} == ids
    for spec in specs:
        attrs = root.list_rse_attributes(spec.rse)
        assert attrs["lfn2pfn_algorithm"] == "identity" and attrs["butler_repo"] == str(spec.butler_repo)
        (proto,) = root.get_rse(spec.rse)["protocols"]
        assert proto["scheme"] == "file" and proto["prefix"] == str(spec.rse_root)
    assert root.get_distance(specs[0].rse, specs[1].rse)[0]["distance"] == 1
    assert oct(lr.secrets_file.stat().st_mode & 0o777) == "0o600"


def test_client_env_for_a_site_process(deployment, sites):
    lr, _, _ = deployment
    env = {**os.environ, **lr.client_env("usdf")}
    code = "from rucio.client import Client; print(Client().whoami()['account'])"
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "drp_usdf"
    # its token went to the deployment's private TMPDIR, not the shared /tmp
    assert list((LR_ROOT / "tmp" / "drp_usdf").rglob("auth_token_for_account_drp_usdf"))


def test_rule_reaches_ok_and_file_is_copied(deployment, sites):
    _, ep, _ = deployment
    (usdf, frdf), creds = sites
    client = _client(ep, creds["usdf"])
    tag = f"ok{time.time_ns()}"
    names = [f"test/{tag}/file{i}.fits" for i in range(3)]
    payload = {name: _register(client, usdf, name) for name in names}
    dataset = f"Dataset/test/{tag}"
    client.add_dataset(SCOPE, dataset)
    client.attach_dids(SCOPE, dataset, [{"scope": SCOPE, "name": n} for n in names])
    t0 = time.monotonic()
    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, frdf.rse)
    state, _ = _wait_rule(client, rule_id, {"OK", "STUCK"})
    latency = time.monotonic() - t0
    print(f"[localrucio] rule on 3 files to OK: {latency:.2f}s")
    assert state == "OK", client.get_replication_rule(rule_id)
    for name, data in payload.items():
        assert (frdf.rse_root / SCOPE / name).read_bytes() == data
    replicas = list(client.list_replicas([{"scope": SCOPE, "name": names[0]}]))
    assert set(replicas[0]["rses"]) == {usdf.rse, frdf.rse}

    # a file attached after the rule exists is picked up (judge-evaluator) and copied too
    late = f"test/{tag}/late.fits"
    data = _register(client, usdf, late)
    t0 = time.monotonic()
    client.attach_dids(SCOPE, dataset, [{"scope": SCOPE, "name": late}])
    deadline = time.monotonic() + RULE_TIMEOUT
    while time.monotonic() < deadline:
        locks = {lock["name"]: lock["state"] for lock in client.list_replica_locks(rule_id)}
        if locks.get(late) == "OK":
            break
        time.sleep(0.1)
    print(f"[localrucio] file attached to the ruled dataset, its lock OK: {time.monotonic() - t0:.2f}s")
    assert locks.get(late) == "OK"
    assert _wait_rule(client, rule_id, {"OK", "STUCK"})[0] == "OK"
    assert (frdf.rse_root / SCOPE / late).read_bytes() == data


def test_missing_source_goes_stuck_and_boost_repairs_the_same_rule(deployment, sites):
    _, ep, _ = deployment
    (usdf, frdf), creds = sites
    client = _client(ep, creds["usdf"])
    tag = f"stuck{time.time_ns()}"
    name = f"test/{tag}/lost.fits"
    data = _register(client, usdf, name)
    dataset = f"Dataset/test/{tag}"
    client.add_dataset(SCOPE, dataset)
    client.attach_dids(SCOPE, dataset, [{"scope": SCOPE, "name": name}])
    src = usdf.rse_root / SCOPE / name
    hidden = src.with_name("lost.fits.away")
    src.rename(hidden)

    (rule_id,) = client.add_replication_rule([{"scope": SCOPE, "name": dataset}], 1, frdf.rse)
    state, to_stuck = _wait_rule(client, rule_id, {"STUCK", "OK"})
    rule = client.get_replication_rule(rule_id)
    print(f"[localrucio] missing source: rule STUCK after {to_stuck:.2f}s ({rule['error']})")
    assert state == "STUCK"
    assert "No such file" in (rule["error"] or "")
    assert [lock["state"] for lock in client.list_replica_locks(rule_id)] == ["STUCK"]

    hidden.rename(src)
    t0 = time.monotonic()
    client.update_replication_rule(rule_id, {"boost_rule": True})
    state, _ = _wait_rule(client, rule_id, {"OK"})
    print(f"[localrucio] source restored + boost_rule: OK after {time.monotonic() - t0:.2f}s")
    assert state == "OK"
    assert (frdf.rse_root / SCOPE / name).read_bytes() == data
    assert [r["id"] for r in client.list_did_rules(SCOPE, dataset)] == [rule_id]


def test_down_stops_everything(deployment):
    lr, _, _ = deployment
    extra_pid = lr.start_process("sleeper", ["sleep", "300"])
    assert lr.start_process("sleeper", ["sleep", "300"]) == extra_pid  # kept, not doubled
    status = lr.status()
    state = _procs.read_json(lr.state_file)
    recorded = {
        "postgres": status["postgres"]["pid"],
        "server": status["server"]["pid"],
        "daemons": status["daemons"]["pid"],
        "sleeper": extra_pid,
    }
    gunicorn_group = _procs.group_members(recorded["server"])
    assert len(gunicorn_group) >= 3  # master and workers
    ports = state["ports"]

    t0 = time.monotonic()
    stopped = lr.down()
    print(f"[localrucio] down: {time.monotonic() - t0:.2f}s {stopped}")
    assert stopped == {"extra:sleeper": True, "daemons": True, "server": True, "postgres": True}
    for what, pid in recorded.items():
        assert _procs.start_time(pid) is None, f"{what} (pid {pid}) still running"
    assert not _procs.group_members(recorded["server"])
    assert _procs.port_free(ports["server"]) and _procs.port_free(ports["pg"])
    assert lr.down() == {"daemons": False, "server": False, "postgres": False}
    after = lr.status()
    assert not (after["server"]["running"] or after["daemons"]["running"] or after["postgres"]["running"])
