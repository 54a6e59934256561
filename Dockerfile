# Production image: the official Airflow 3.3.2 image on Python 3.11, plus the LSST
# middleware, Rucio and PanDA clients. plugins/ and include/ are importable by every
# Airflow component (the triggerer included, which does not load DAG bundles).
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/multisite-drp/
RUN pip install --no-cache-dir -r /opt/multisite-drp/requirements.txt -c /opt/multisite-drp/constraints.txt

COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root dags/ /opt/airflow/dags/

ENV PYTHONPATH=/opt/airflow/plugins:/opt/airflow/include \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
