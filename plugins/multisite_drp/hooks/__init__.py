"""Airflow hooks: build the campaign's services from Airflow Connections (``campaign``),
and the operators' and sensors' shared preamble and error handling (``mixin``)."""
