"""The command-runner port (``base``) and its embedded adapter (``embedded``); the
Kubernetes pod adapter imports Airflow's provider and lives in ``hooks.pods``."""
