# The Airflow image for production, pinned to the locked Airflow version, with
# the project installed into it from the same lock file the tests use.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11

USER airflow
WORKDIR /opt/mianshen
COPY --chown=airflow:root requirements-lock.txt pyproject.toml ./
# The image already carries Airflow; pin it so nothing in the lock can move it.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r requirements-lock.txt
COPY --chown=airflow:root pipelines ./pipelines
COPY --chown=airflow:root expectations ./expectations
COPY --chown=airflow:root sql ./sql
COPY --chown=airflow:root data/policies ./data/policies
COPY --chown=airflow:root dags /opt/airflow/dags
RUN pip install --no-cache-dir --no-deps -e .
ENV PYTHONPATH=/opt/mianshen \
    MIANSHEN_POLICIES=/opt/mianshen/data/policies \
    MIANSHEN_EXPECTATIONS=/opt/mianshen/expectations
