"""Airflow's `hostname_callable` for the Celery end-to-end test: each worker reports
the name it was started with, so the test can see which worker ran which task."""
import os


def hostname() -> str:
    return os.environ["E2E_WORKER_NAME"]
