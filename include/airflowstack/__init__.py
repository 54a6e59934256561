"""Real Airflow 3.3 processes on this machine (scheduler, triggerer, dag-processor, API server,
LocalExecutor, PostgreSQL 15 metadata database) and a small client of its REST API.

``python -m airflowstack up|down|status --root DIR``. See :mod:`airflowstack.stack` and
:mod:`airflowstack.client`.
"""

from airflowstack.client import AirflowClient, ApiError
from airflowstack.stack import AirflowStack, StackEndpoint

__all__ = ["AirflowClient", "AirflowStack", "ApiError", "StackEndpoint"]
