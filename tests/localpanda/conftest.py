"""One local PanDA relay for the localpanda tests.

PanDA and iDDS cannot run on this machine; ``include/localpanda`` stands in for them. The
relay runs as its own detached process on a free loopback port under a tmp root, and is
stopped by its pid at the end. Every client call in these tests is the real client code:
ctrl_bps_panda's ``PanDAService`` and ``get_idds_client`` over panda-client's HTTP client.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.localpanda._bps import pid_alive

LOCK_SITE = "LOCKSITE"


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory):
    from localpanda import LocalPanDA

    root = tmp_path_factory.mktemp("localpanda")
    lock_repo = root / "lock_repo"  # stands for a site's butler repository
    lock_repo.mkdir()
    lp = LocalPanDA(root / "relay")
    lp.up(slots=2, job_env={"LOCALPANDA_TEST_ENV": "from-job-env"}, site_locks={LOCK_SITE: str(lock_repo)})
    saved = {k: os.environ.get(k) for k in (*lp.client_env(), "PANDA_AUTH", "PANDA_AUTH_ID_TOKEN", "PANDA_AUTH_VO")}
    os.environ.update(lp.client_env())
    for k in ("PANDA_AUTH", "PANDA_AUTH_ID_TOKEN", "PANDA_AUTH_VO"):
        os.environ.pop(k, None)
    import pandaclient.Client as pc  # reads PANDA_URL_SSL at import; it may have been imported already

    urls = (pc.baseURL, pc.baseURLSSL)
    pc.baseURL = pc.baseURLSSL = lp.url()
    lp.lock_repo = lock_repo  # type: ignore[attr-defined]
    lp.work = root / "work"  # type: ignore[attr-defined]
    yield lp
    pid = lp.status()["pid"]
    assert lp.down()
    assert pid is None or not pid_alive(pid)
    pc.baseURL, pc.baseURLSSL = urls
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    yield
    if "relay" in request.fixturenames:
        lp = request.getfixturevalue("relay")
        if lp.status()["running"]:
            lp.clear_faults()


@pytest.fixture
def work(relay, request) -> Path:
    """A directory for this test's workflows (and their marker files)."""
    d = Path(relay.work) / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d
