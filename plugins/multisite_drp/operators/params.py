"""The Params every campaign DAG takes (``drp_campaign``, ``drp_nightly``), in one place.

Each is validated by Airflow's trigger form against its JSON schema, then again against the
campaign file before any external action (``hooks.campaign.CampaignHook``).
"""

from __future__ import annotations

from airflow.sdk import Param

__all__ = ["campaign_params"]


def campaign_params(default_campaign: str, sites: list[str] | None = None) -> dict[str, Param]:
    """``campaign_file``, ``data_root``, ``sites`` (``sites``: the names the form offers),
    ``generation`` and ``dry_run``; a DAG adds its own."""
    site_items = {"type": "string", "enum": sites} if sites else {"type": "string"}
    return {
        "campaign_file": Param(default_campaign, type="string", minLength=1, maxLength=4096,
                               description="Campaign YAML, validated before anything runs: an absolute path inside "
                                           "the deployment's allowed roots ($MULTISITE_DRP_ALLOWED_ROOTS; default: "
                                           "include/campaigns, include/pipelines and var of the repository), as "
                                           "is: no $VAR or ~ is expanded. Its pipeline must lie inside them too."),
        "data_root": Param(None, type=["null", "string"], maxLength=4096,
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
