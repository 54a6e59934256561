"""Thin Airflow operators: each builds the campaign's services and calls one action."""
