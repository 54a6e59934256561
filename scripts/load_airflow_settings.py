"""Load an Astro-CLI-format airflow_settings.yaml into a plain Airflow.

Writes the three JSON files that `airflow connections import`, `airflow pools import`
and `airflow variables import` read, then runs those commands, so no Astro CLI is
needed. Existing connections are overwritten (``--overwrite``) so re-running is safe.

``--local-rucio ROOT`` (with ``--data-root``): replica connections on host ``local-rucio``
are pointed at the project's local Rucio under ROOT, which is started if it is not
running (``include/localrucio``), with each site's generated login and password.
``--local-panda ROOT``: workflow connections on host ``local-panda`` are pointed at the
local PanDA relay under ROOT (``include/localpanda``, the stand-in for PanDA and iDDS),
started if it is not running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def convert(settings: dict) -> tuple[dict, dict, dict]:
    """Return (connections, pools, variables) in the shapes the airflow CLI imports."""
    section = settings.get("airflow") or {}
    connections = {}
    for c in section.get("connections") or []:
        entry = {"conn_type": c.get("conn_type", "generic")}
        for key in ("host", "schema", "login", "password", "port"):
            if c.get(f"conn_{key}") is not None:
                entry[key] = c[f"conn_{key}"]
        if c.get("conn_extra") is not None:
            entry["extra"] = json.dumps(c["conn_extra"], sort_keys=True)
        connections[c["conn_id"]] = entry
    pools = {
        p["pool_name"]: {"slots": int(p["pool_slot"]), "description": p.get("pool_description", ""),
                         "include_deferred": bool(p.get("pool_include_deferred", False))}
        for p in section.get("pools") or []
    }
    variables = {v["variable_name"]: v["variable_value"] for v in section.get("variables") or []}
    return connections, pools, variables


def connection_env(settings: dict) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` environment values (Airflow's JSON form) for every connection.

    Lets ``dag.test()`` runs (the demo, the tests, the benchmark) use the same connections
    without writing them into a metadata database.
    """
    connections, _, _ = convert(settings)
    env = {}
    for conn_id, entry in connections.items():
        value = dict(entry)
        if "extra" in value:
            value["extra"] = json.loads(value["extra"])
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value, sort_keys=True)
    return env


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="?", default="airflow_settings.yaml")
    p.add_argument("--local-rucio", help="the local Rucio's directory, for replica connections on host local-rucio")
    p.add_argument("--local-panda", help="the local PanDA relay's directory, for workflow connections on "
                                         "host local-panda")
    p.add_argument("--data-root", help="where the embedded sites live (with --local-rucio / --local-panda)")
    p.add_argument("--campaign", default=str(Path(__file__).resolve().parents[1] / "include" / "campaigns"
                                             / "minidrp_embedded.yaml"))
    args = p.parse_args(argv[1:])
    path = Path(args.settings)
    connections, pools, variables = convert(yaml.safe_load(path.read_text()))
    local = [(root, fill) for root, fill in ((args.local_rucio, "localrucio"), (args.local_panda, "localpanda")) if root]
    if local:
        import importlib

        from multisite_drp.campaign.config import load_campaign

        cfg = load_campaign(args.campaign, data_root=args.data_root, check_pipeline=False)
        for root, module in local:
            fill = importlib.import_module(f"{module}.campaign").fill_local_connections
            plain = {cid: {**c, "extra": json.loads(c["extra"])} if "extra" in c else c
                     for cid, c in connections.items()}
            for cid, conn in fill(plain, cfg, Path(root)).items():
                connections[cid] = {**conn, "extra": json.dumps(conn["extra"], sort_keys=True)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, payload, cmd in (
            ("connections.json", connections, ["connections", "import", "--overwrite"]),
            ("pools.json", pools, ["pools", "import"]),
            ("variables.json", variables, ["variables", "import"]),
        ):
            if not payload:
                continue
            f = Path(tmp) / name
            f.write_text(json.dumps(payload, indent=2))
            subprocess.run([airflow, *cmd, str(f)], check=True)
    print(f"loaded {len(connections)} connections, {len(pools)} pools, {len(variables)} variables from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
