#!/bin/sh
# Let drkit's scheduler container take base backups (pg_basebackup uses the
# replication protocol, which "host all all" lines do not cover).
set -eu
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "${PGDATA}/pg_hba.conf"
