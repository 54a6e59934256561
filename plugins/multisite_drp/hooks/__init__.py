"""Airflow hooks: build the campaign's services from Airflow Connections."""
