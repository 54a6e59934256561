# Production image: the official Airflow 3.3.2 image on Python 3.11, plus the LSST
# middleware, Rucio and PanDA clients. plugins/ and include/ are importable by every
# Airflow component (the triggerer included, which does not load DAG bundles).
#
# The same image serves the scheduler, dag-processor, triggerer, api-server and workers
# (CeleryExecutor: `celery worker`; KubernetesExecutor: one pod per task) and the command
# pods of a site whose `commands` connection is adapter `kubernetes` (README, "Heavy
# commands in pods"): those pods override the image's /entrypoint (which would run any
# argument as `airflow ...`) with the connection's `entrypoint`, by default
# `/usr/bin/dumb-init --`, which this base image has, and run `pipetask`, `butler` or
# `rucio-register` from PATH (pip installs them in ~airflow/.local/bin).
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/multisite-drp/
# apache-airflow is pinned in requirements.txt, so pip cannot move the image's Airflow.
RUN pip install --no-cache-dir -r /opt/multisite-drp/requirements.txt -c /opt/multisite-drp/constraints.txt \
    && pipetask --help >/dev/null && butler --help >/dev/null && rucio-register --help >/dev/null

COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root dags/ /opt/airflow/dags/

# MULTISITE_DRP_ALLOWED_ROOTS (campaign files, pipelines, data roots a run may name) is the
# deployment's to set; unset, it is /opt/airflow/include/{campaigns,pipelines} and /opt/airflow/var.
ENV PYTHONPATH=/opt/airflow/plugins:/opt/airflow/include \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
