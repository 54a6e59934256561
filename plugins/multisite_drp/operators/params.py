"""The Params every campaign DAG takes (``drp_campaign``, ``drp_nightly``), in one place.

Each is validated by Airflow against its JSON schema when a run is created (the trigger
form shows the error and no run is made), then again against the campaign file before any
external action (``hooks.campaign.CampaignHook``).
"""

from __future__ import annotations

from airflow.sdk import Param

__all__ = ["ABSOLUTE", "CAMPAIGN_FILE", "campaign_params"]

#: JSON-schema patterns the trigger form applies: an absolute path; an absolute ``.yaml``/``.yml`` file.
ABSOLUTE = r"^/"
CAMPAIGN_FILE = r"^/.*[.]ya?ml$"


def campaign_params(default_campaign: str, sites: list[str] | None = None) -> dict[str, Param]:
    """``campaign_file``, ``data_root``, ``sites`` (``sites``: the names the form offers),
    ``generation`` and ``dry_run``; a DAG adds its own."""
    site_items = {"type": "string", "enum": sites} if sites else {"type": "string"}
    return {
        # The form checks what a schema can (absolute, YAML) before a run is created; the
        # campaign hook checks the rest (allowed roots, the file itself) before any action.
        "campaign_file": Param(default_campaign, type="string", minLength=1, maxLength=4096, pattern=CAMPAIGN_FILE,
                               description="Campaign YAML, validated before anything runs: an absolute path inside "
                                           "the deployment's allowed roots ($MULTISITE_DRP_ALLOWED_ROOTS; default: "
                                           "include/campaigns, include/pipelines and var of the repository), as "
                                           "is: no $VAR or ~ is expanded. Its pipeline must lie inside them too."),
        "data_root": Param(None, type=["null", "string"], maxLength=4096, pattern=ABSOLUTE,
                           description="Override the campaign's data_root (where the embedded sites live): a "
                                       "directory inside the allowed roots, as is (no $VAR or ~). The work_dir "
                                       "stays inside it."),
        "sites": Param([], type="array", items=site_items, uniqueItems=True,
                       description="Sites to include (must include the hub); empty means all. Shares are rescaled."),
        "generation": Param(0, type="integer", minimum=0, maximum=999,
                            description="Bump for a fresh run in new collections; the same generation resumes "
                                        "(drp_nightly: whose plan's tract regions assign the visits)."),
        "dry_run": Param(False, type="boolean", description="Plan and report; take no external action."),
    }
