"""The campaign page in Airflow's UI (``app.py``: a FastAPI app the plugin mounts; ``page.py``:
its HTML and map; ``progress.py``: where a run stands, from its task states and plan)."""
