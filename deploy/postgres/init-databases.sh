#!/bin/bash
# Creates one role and one database per service (auth, deploy), each owned
# by its service's role, so neither service can touch the other's tables.
# The postgres image runs this once, on an empty data directory, from
# /docker-entrypoint-initdb.d/; docker-compose.yml passes the passwords in
# PADLOCK_AUTH_DB_PASSWORD and PADLOCK_DEPLOY_DB_PASSWORD (the same values
# the services' DATABASE_URLs carry). Runs against any PostgreSQL 15 too:
#   POSTGRES_USER=postgres PGHOST=... PADLOCK_AUTH_DB_PASSWORD=... \
#   PADLOCK_DEPLOY_DB_PASSWORD=... deploy/postgres/init-databases.sh
set -euo pipefail

: "${PADLOCK_AUTH_DB_PASSWORD:?PADLOCK_AUTH_DB_PASSWORD is not set}"
: "${PADLOCK_DEPLOY_DB_PASSWORD:?PADLOCK_DEPLOY_DB_PASSWORD is not set}"

# psql substitutes :'var' as a quoted literal and :"var" as an identifier,
# so the passwords need no escaping here.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set auth_password="$PADLOCK_AUTH_DB_PASSWORD" \
  --set deploy_password="$PADLOCK_DEPLOY_DB_PASSWORD" <<'SQL'
CREATE ROLE padlock_auth LOGIN PASSWORD :'auth_password';
CREATE ROLE padlock_deploy LOGIN PASSWORD :'deploy_password';
CREATE DATABASE auth OWNER padlock_auth;
CREATE DATABASE deploy OWNER padlock_deploy;
REVOKE ALL ON DATABASE auth FROM PUBLIC;
REVOKE ALL ON DATABASE deploy FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE auth TO padlock_auth;
GRANT CONNECT, TEMPORARY ON DATABASE deploy TO padlock_deploy;
SQL
