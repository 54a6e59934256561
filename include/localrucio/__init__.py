"""A local Rucio deployment for the demo and the tests (PostgreSQL, the Rucio server,
its daemons and a local-copy transfertool), started and stopped by the project.

    from localrucio import LocalRucio, SiteSpec, RucioEndpoint
    lr = LocalRucio(ROOT / "var" / "rucio")
    ep = lr.up()                       # or reuse a running deployment
    creds = lr.ensure_sites("drp", [SiteSpec("usdf", "USDF_LOCAL_DISK", rse_root, butler_repo)])
    env = lr.client_env("usdf")        # RUCIO_CONFIG etc. for a rucio-clients process
    lr.down()

CLI: ``python -m localrucio up|down|status [--root var/rucio] [--reset]``.
See :mod:`localrucio.deploy`, :mod:`localrucio.daemons`, :mod:`localrucio.transfertool`.
This package imports only the standard library at import time; ``ensure_sites`` uses
rucio-clients (project venv), the daemons and transfertool the server venv.
"""

from localrucio.deploy import DEFAULT_ROOT, LocalRucio, RucioEndpoint, SiteSpec

__all__ = ["DEFAULT_ROOT", "LocalRucio", "RucioEndpoint", "SiteSpec"]
