"""A local stand-in for PanDA and iDDS, which cannot run on this machine.

    from localpanda import LocalPanDA
    lp = LocalPanDA(ROOT / "var" / "panda")
    url = lp.up(slots=2, job_env={...}, site_locks={"CC-IN2P3": ".../frdf/.multisite-drp-write.lock"})
    # PANDA_URL_SSL=url; ctrl_bps_panda submits, reports, cancels and restarts against it
    lp.control(fail_jobs=["_240605003"]); lp.clear_faults(); lp.executions(); lp.stats()
    lp.down()

CLI: ``python -m localpanda up|down|status [--root var/panda]``. See :mod:`localpanda.relay`.
"""

from localpanda.deploy import DEFAULT_ROOT, LocalPanDA

__all__ = ["DEFAULT_ROOT", "LocalPanDA"]
