#!/usr/bin/env bash
# Runs once when the PostgreSQL volume is new: a separate database and role for
# the warehouse, beside Airflow's metadata database.
set -euo pipefail
: "${MIANSHEN_DB_PASSWORD:?MIANSHEN_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE mianshen LOGIN PASSWORD '${MIANSHEN_DB_PASSWORD}';
CREATE DATABASE mianshen OWNER mianshen;
SQL
