"""The prose of the generated reference docs (:mod:`drkit.docgen`): what each key means.

The structure (keys, types, defaults, allowed values) comes from the models; this module
only says what a key is for, keyed by the dotted names the models use.  A key the models
grow without a line here is reported by ``python -m drkit.docgen`` and fails
``tests/cli/test_docs.py``.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------

POLICY_SUMMARY = (
    "One environment's policy: where its database and backup repository are, when jobs run, "
    "how long backups are kept, and the recovery objectives drills check."
)

POLICY_KEYS: dict[str, str] = {
    "environment": "The environment's name: dev, test, staging, prod, or any name with an "
    "explicit rank. Default: the file's stem (policies/prod.yaml is prod).",
    "rank": "Where the environment sits in the chain; data only flows from a higher rank to "
    "a lower one. Optional for the standard names ({standard}).",
    "protected": "Never a sanitize target, whatever ranks or flags say. Default: true for "
    "prod, false otherwise.",
    "database": "The environment's PostgreSQL server.",
    "database.url": "Connection URL (postgresql://user:password@host:port/dbname). A secret: "
    "masked in every output; usually ${DATABASE_URL}.",
    "database.databases": "Databases to back up and restore. Default: the one named in the url.",
    "repository": "Where backups, WAL and drill reports are stored.",
    "repository.url": "file:///path or s3://bucket/prefix. The environment's objects live "
    "under <url>/<ENV>/.",
    "repository.endpoint_url": "S3-compatible endpoint (MinIO and others); empty for AWS S3.",
    "repository.region": "S3 region.",
    "repository.storage_class": "S3 storage class of uploaded objects (e.g. STANDARD_IA).",
    "repository.compression": "Compression of stored objects.",
    "repository.compression.algorithm": "zstd, gzip or none.",
    "repository.compression.level": "Compression level: zstd 1–22, gzip 1–9.",
    "repository.encryption": "Client-side encryption with age. Absent: objects are stored "
    "unencrypted (use the store's own encryption at rest).",
    "repository.encryption.recipients": "age public keys (age1...) every object is "
    "encrypted to. The backup host needs only these, never a private key.",
    "repository.encryption.identity_file": "age identity (private key) file, only where "
    "restores, verifies and drills run. $DRKIT_AGE_IDENTITY_FILE is also read.",
    "repository.encryption.identity_files": "More identity files, e.g. the old key during a "
    "key rotation (runbooks/rotate-encryption-key.md).",
    "repository.object_lock": "S3 Object Lock: every object drkit writes is retained by the "
    "store, so nobody (drkit, a stolen key, ransomware) can delete it before its lock ends. "
    "The bucket must be created with object lock enabled (`drkit check` fails otherwise). "
    "s3:// only: a file:// repository with object_lock is a policy error; copy its backups "
    "to an object-lock bucket for the same property.",
    "repository.object_lock.mode": "governance (a user with s3:BypassGovernanceRetention may "
    "still delete) or compliance (nobody can, not even the account's root user).",
    "repository.object_lock.days": "Days each object stays locked from when it is written. "
    "prune keeps a backup or WAL file the store still locks, and deletes it on a later run.",
    "schedule": "Cron expressions (5 fields, in `timezone`) of the jobs `drkit schedule run` "
    "runs. A job without an expression is not scheduled.",
    "schedule.timezone": "IANA time zone of the cron expressions and of the retention "
    "calendar (days, ISO weeks, months).",
    "wal_archiving": "WAL is archived continuously (archive_command = drkit wal-push); "
    "exposure is then measured from the last archived WAL, and PITR is possible.",
    "wal_archiver": "How `drkit wal-push` archives WAL. Every mode stores a segment whole "
    "before PostgreSQL may mark it done, never overwrites a different file of the same name, "
    "and fails (PostgreSQL keeps the segment and retries) rather than drop WAL.",
    "wal_archiver.mode": "`sync`: each archive_command call stores its segment (and the ones "
    "already marked ready) itself. `async`: a background worker, one per cluster and "
    "repository, started by wal-push, stores ready segments in parallel and records an "
    "acknowledgement bound to each segment's sha256 in `pg_wal/.drkit-archive`; wal-push "
    "returns at once for an acknowledged segment, else waits for it, then stores it itself.",
    "wal_archiver.workers": "Segments stored in parallel by the async worker. 0: automatic "
    "(the number of CPUs, at least 2; 8 for s3://).",
    "wal_archiver.wait": "Seconds wal-push waits for the async worker's acknowledgement before "
    "storing the segment itself.",
    "wal_archiver.idle_exit": "Seconds without a ready segment after which the async worker "
    "exits (the next wal-push starts a new one).",
    "wal_archiver.compression_level": "Compression level of WAL segments, with "
    "repository.compression's algorithm (gzip: 1 to 9). Default 1: zstd level 1 compresses "
    "WAL about twice as fast as level 3 for a few percent of size, so archiving keeps up "
    "with a busy primary. null: repository.compression.level.",
    "wal_streaming": "`drkit wal-receive ENV` streams WAL from the physical replication slot "
    "`drkit_ENV` (pg_receivewal) and stores each finished segment as wal-push does; "
    "archive_command stays the safety net. `true`, or a mapping of the settings below.",
    "wal_streaming.enabled": "Whether WAL is streamed (a mapping without this key: on).",
    "wal_streaming.partial_interval": "How often the segment being received (`.partial`) is "
    "stored, so `restore --point-in-time latest` and drills reach WAL no segment holds yet "
    "(a duration: 5s, 1m).",
    "retention": "Grandfather-father-son retention, applied by `drkit prune`. A backup is "
    "kept if any rule keeps it; the newest backup of each database is never deleted.",
    "retention.daily": "Keep the newest backup of each of the last N calendar days that have one.",
    "retention.weekly": "Keep the newest backup of each of the last N ISO weeks.",
    "retention.monthly": "Keep the newest backup of each of the last N calendar months.",
    "retention.orphan_grace": "A backup without a manifest (an interrupted run) older than "
    "this is removed.",
    "retention.wal": "Point-in-time recovery over this last stretch only (e.g. 14d): WAL is "
    "kept from the start of the newest kept base backup consistent at least this long before "
    "the newest base backup (or now, when earlier); older kept base backups keep just the WAL "
    "that makes them consistent (their start..stop segments) and restore to that point only. "
    "Absent: WAL is kept from the oldest kept base backup on.",
    "copies": "Other repositories that hold the primary's backups and WAL, by name "
    "(`copies: {offsite: {url: s3://...}}`): `drkit copy ENV` (and every scheduled backup) "
    "copies what each lacks, as stored, verified by sha256 on arrival; `--repo NAME` on "
    "backups, verify, prune, restore, drill and status reads the copy instead of the primary. "
    "Keys as in `repository`, plus `retention`.",
    "copies.NAME.url": "Where the copy lives: file:///path (an existing directory) or "
    "s3://bucket/prefix.",
    "copies.NAME.retention": "The copy's own retention (as `retention`), applied by "
    "`drkit prune ENV --repo NAME`; what it would prune is not copied. Absent: the primary's.",
    "copies.NAME.compression": "Refused: objects are copied as stored, with the primary's "
    "compression.",
    "copies.NAME.encryption": "Absent: the primary's. Objects are copied as stored, never "
    "decrypted or re-encrypted (the backup host holds no private key), so the recipients must "
    "be the primary's; a copy may name its own identity files (where it is restored from).",
    "copies.NAME.object_lock": "S3 Object Lock for the copy's objects (an immutable copy of "
    "a file:// primary).",
    "backup": "Logical backups: when pg_dump runs in directory format with parallel jobs.",
    "backup.parallel_threshold": "A database larger than this (pg_database_size) is dumped "
    "in directory format (`pg_dump -Fd -j`), one stored object per table file, by a backup "
    "without --jobs (also a scheduled one). A size such as 10GiB, 500MB or a number of "
    "bytes; null: never by size.",
    "backup.jobs": "pg_dump jobs of a directory-format backup chosen by "
    "`parallel_threshold` (`drkit backup --jobs N` sets them for one run).",
    "objectives": "Recovery objectives: status, metrics, alerts and drills compare against them.",
    "objectives.rpo": "Recovery point objective: the most data you accept to lose (30m, 1h, 1d).",
    "objectives.rto": "Recovery time objective: the longest a restore may take, measured by "
    "drills.",
    "drill": "What `drkit drill ENV` checks after restoring.",
    "drill.checks": "Checks run against the restored copy.",
    "drill.checks.row_counts": "Compare every table's row count with the counts captured at "
    "backup time (logical backups).",
    "drill.checks.sql": "SQL checks, run read-only: a check passes when its query's first value is "
    "true.",
    "drill.checks.sql[].name": "The check's name in reports.",
    "drill.checks.sql[].query": "One SQL query run on the restored database.",
    "drill.checks.sql[].database": "Database to run it in. Default: the first database.",
    "drill.checks.amcheck": "Run pg_amcheck on the restored cluster where it is available.",
}

POLICY_DOC = """\
# Policy reference — `policies/ENV.yaml`

<!-- generated by `python -m drkit.docgen` from drkit/config.py; do not edit -->

{summary}

`ENV`, the file's stem, names the environment on the command line, in the repository
(`<repository.url>/<ENV>/`) and in metric labels. The policy directory is `./policies`,
`--policy-dir DIR`, or `$DRKIT_POLICY_DIR`.

- Every string may use `${{VAR}}` or `${{VAR:-default}}`; they are expanded from the
  environment before validation, so `level: ${{ZSTD_LEVEL:-3}}` is a number once
  expanded. An unset variable without a default is an error.
- Unknown keys, wrong types, bad cron expressions and unresolvable variables are errors
  (exit 2) naming the file, the key and the problem: run `drkit policy check` after
  each change (offline), and `drkit check ENV` to prove the chain end to end.
- Durations are written `90s`, `30m`, `1h`, `1h30m`, `7d`, `2w` or as a number of seconds.
- Secrets (`database.url`, passwords in `repository.endpoint_url`) are masked in every
  output.

Editors that understand JSON Schema validate as you type: the shipped files start with
`# yaml-language-server: $schema=../docs/schemas/policy.schema.json`
([schema](schemas/policy.schema.json)).

## Keys

{table}

## Example

```yaml
# yaml-language-server: $schema=../docs/schemas/policy.schema.json
environment: prod
database:
  url: ${{DATABASE_URL}}
  databases: [sentrikat_prod]
repository:
  url: s3://sentrikat-backups/prod
  endpoint_url: ${{S3_ENDPOINT:-}}
  region: eu-central-1
  compression: {{algorithm: zstd, level: 3}}
  encryption:
    recipients: [age1...]
    identity_file: ${{DRKIT_AGE_IDENTITY_FILE:-}}
schedule:
  logical_backup: "0 2 * * *"
  physical_backup: "0 3 * * 0"
  prune: "30 4 * * *"
  drill: "0 5 * * 1"
  timezone: Europe/Rome
wal_archiving: true
retention: {{daily: 30, weekly: 8, monthly: 6}}
backup: {{parallel_threshold: 10GiB, jobs: 2}}
objectives: {{rpo: 1h, rto: 30m}}
drill:
  checks:
    row_counts: true
    sql:
      - name: vulnerabilities present
        query: SELECT count(*) > 0 FROM vulnerability
```

The shipped policies are in [`policies/`](../policies/).
"""

# ---------------------------------------------------------------------------
# Sanitize rules
# ---------------------------------------------------------------------------

RULES_SUMMARY = (
    "How `drkit sanitize SRC DST` copies SRC's data into DST: which tables and columns are "
    "kept, transformed, filtered or left out."
)

RULES_KEYS: dict[str, str] = {
    "version": "Format version; only 1 exists.",
    "from": "The source environment (a policy name).",
    "to": "The target environment (a policy name); must rank strictly lower and not be protected.",
    "salt": "Keys every deterministic pseudonym (fake, hash, email, replace_pii). Keep it "
    "secret and stable; write ${DRKIT_SANITIZE_SALT}. At least 8 characters.",
    "defaults": "What happens to tables and columns the rules do not list.",
    "defaults.unlisted_tables": "A table not listed: fail (schema drift guard), copy it as "
    "is, or skip it.",
    "defaults.unlisted_columns": "A column not listed in a listed table: fail (schema drift "
    "guard) or keep it.",
    "tables": "One rule per table, by name (`user`, or `schema.table`; default schema public).",
    "subset": "Copy only a connected subset: the start rows and every row they reference "
    "through foreign keys.",
    "subset.start": "Where the subset starts.",
    "subset.start.table": "The start table.",
    "subset.start.where": "SQL boolean expression over the start table's columns.",
    "subset.follow": "How the subset grows; only foreign_keys.",
}

TABLE_KEYS: dict[str, str] = {
    "columns": "Column → strategy. With `copy: true`, a list of column names instead pins "
    "the columns the rules have seen: they are kept, and any other column is schema drift.",
    "rows": "all, or none (the table's schema only, no rows).",
    "where": "SQL boolean expression over this table's columns: only matching rows are "
    "copied. Parsed with sqlglot (PostgreSQL dialect); statements and subqueries that write "
    "are refused.",
    "copy": "Every column kept as is (no masks allowed).",
    "skip": "The table is left out entirely.",
}

TABLE_SHORTHAND = "`table: copy` is `{copy: true}`; `table: skip` is `{skip: true}`."

RULES_DOC = """\
# Sanitize rules reference — `sanitize_rules/SRC-to-DST.yaml`

<!-- generated by `python -m drkit.docgen` from drkit/sanitize/rules/ and drkit/sanitize/strategies/; do not edit -->

{summary}

`drkit sanitize SRC DST` reads `sanitize_rules/SRC-to-DST.yaml` unless `--rules FILE`
says otherwise. `drkit sanitize init SRC` drafts one from SRC's schema, guessing the
columns that hold personal data; `drkit sanitize check SRC DST` checks it against SRC's
live schema without copying anything. Every problem is an error (exit 2) naming the
file, table, column and reason, before any data moves. Strings may use `${{VAR}}` and
`${{VAR:-default}}`.

Editors that understand JSON Schema validate as you type: the shipped files start with
`# yaml-language-server: $schema=../docs/schemas/sanitize-rules.schema.json`
([schema](schemas/sanitize-rules.schema.json)).

## The file

{top}

## A table rule

{table}

{shorthand}

```yaml
tables:
  user:
    columns:
      id: keep
      email: {{strategy: template, template: "user_{{id}}@example.com"}}
      full_name: {{strategy: fake, provider: name}}
      last_login_ip: nullify
  alert_log: {{rows: none}}                                      # schema only
  sync_log: {{where: "created_at >= now() - interval '7 days'"}}
  vulnerability: {{copy: true, columns: [id, cve, severity]}}    # kept as is, columns pinned
```

`copy: true` without a column list pins the table's columns on the first
`drkit sanitize check` or run; with `columns: [...]` the list is the pin. Either way a
column added later stops the run under `unlisted_columns: fail` until someone decides
what happens to it.

## Strategies

A column's strategy is written by name (`keep`, `nullify`, or any strategy whose options
all have defaults) or as a mapping with `strategy:` and its options.

{strategies}

## What `drkit sanitize` guarantees

- Raw values of masked columns are never readable in the target database.
- The copy is built aside, scanned there, and only then published by an atomic swap;
  any failure or interrupt leaves DST exactly as it was.
- Data flows only from a strictly higher rank to a lower one; a protected environment is
  never a target; DST is identified on the server libpq actually reaches, by its
  cluster's system identifier and its database OID, not by its URL; an environment whose
  database cannot be identified is never taken as distinct, unless DST carries drkit's
  stamp (a MAC-bound database comment no URL can set) (exit 4).
- The build is private (no CONNECT for PUBLIC); a killed run's build is dropped by the
  next run, `sanitize check` or `drkit check`; the swap waits for DST's lock a bounded
  time and then refuses (exit 4); once published, the run exits 0.
- Every foreign key and unique constraint of the source holds in the target.
- Before a row is written, it is searched for every original value of every transformed
  column (in canonical forms: decoded, NFKC-case-folded, without separators, phone
  numbers by their digits) and, in every column that reaches the target unmasked, for
  personal data by content (e-mail, phone, IBAN, card, IP address, the masked people's
  last names, secrets); the catalog and materialized views are searched after the build;
  any hit fails the run (exit 3) naming table, column, kind and count, never the value.
- A kept column reviewed by a person says so: `{{strategy: keep, pii: none}}  # why` (or
  the kinds accepted, `pii: [ip]`); the review turns off the content search only.
  `drkit sanitize scan SRC --rules R` lists what a run would refuse, writing nothing.
- A table or column the rules have not seen stops the run under `fail`.
"""

# ---------------------------------------------------------------------------
# Exit codes and the CLI
# ---------------------------------------------------------------------------

EXIT_CODES_DOC = """\
# Exit codes

<!-- generated by `python -m drkit.docgen` from drkit/errors.py; do not edit -->

Every drkit command exits with one of these codes, and prints one line on stderr saying
what failed, on which object, and what to do (a traceback only with `-v`). Under
`--json`, a failure is `{{"ok": false, "error": {{"code": N, "message": ...}}}}` on stdout.

{table}

`wal-fetch` exits 1 when the requested WAL file is not in the archive (PostgreSQL then
tries other sources), and never dies by a signal or exits above 125 for a missing file,
which PostgreSQL would treat as fatal.
"""

CLI_DOC = """\
# Command-line reference

<!-- generated by `python -m drkit.docgen` from drkit/cli/; do not edit -->

Global options (`-v`, `-q`, `--json`, `--log-level`, `--log-format`, `--policy-dir`) go
before or after the command. `ENV` is the stem of a policy file ([policy
reference](policy.md)). Exit codes: [exit-codes.md](exit-codes.md).

{index}

{body}
"""

INDEX_DOC = """\
# drkit reference

<!-- generated by `python -m drkit.docgen`; do not edit -->

Generated from the code by `python -m drkit.docgen` (run it after changing a command,
a flag, a policy or rules model, or an exit code; `tests/cli/test_docs.py` fails while these
files are stale).

- [Command line](cli.md): every command, argument and option.
- [Policy file](policy.md) (`policies/ENV.yaml`) and its
  [JSON Schema](schemas/policy.schema.json).
- [Sanitize rules](sanitize-rules.md) (`sanitize_rules/SRC-to-DST.yaml`) and their
  [JSON Schema](schemas/sanitize-rules.schema.json).
- [Exit codes](exit-codes.md).
- [JSON output](json.md): the shape of every command's `--json` document, as JSON
  Schema.

The walkthrough is the [README](../README.md); procedures are in
[runbooks](../runbooks/README.md).
"""


JSON_DOC = """\
# JSON output

<!-- generated by `python -m drkit.docgen`; do not edit -->

Every command accepts `--json`: stdout then holds exactly one JSON document and nothing
else (progress and log lines go to stderr).  The shapes are generated from
`drkit/cli/documents.py` and published as JSON Schema (draft 2020-12) under
[`schemas/output/`](schemas/output/); `tests/cli/test_json_contract.py` validates real
outputs against them.

- Every document has `ok`: true exactly when the exit code is 0.
- The shapes are versioned (now version 1, in each schema's `$comment`). The version
  goes up only when a key is removed or changes meaning; new keys may appear at any
  time, so every object allows keys its schema does not list.
- A failing command writes `"ok": false` and `"error": {{"code": N, "message": "..."}}`
  (the exit code and the one error line, secrets masked), beside whatever it had to
  report (`check` its checks, `verify` its verdicts). A command that failed before it
  had anything to report writes just the failure document. A drill's report keeps
  its own `error`: a string saying why the drill could not run (verdict `ERROR`).
- Timestamps are RFC 3339 in UTC with `Z` (`2026-11-28T21:04:05.123456Z`), except
  `schedule show`'s `next_runs`, which are in the policy's time zone with its offset.
- Sizes are bytes and durations are seconds, and every key holding one names its
  unit: `size_bytes`, `raw_size_bytes`, `duration_seconds`, `phases_seconds`,
  `age_seconds`, `deleted_bytes`, a drill's `rto.total_seconds` and
  `rpo.achieved_seconds`. The older keys without a unit (`size`, `raw_size`,
  `stored_size`, `bytes`, `duration`, `seconds`, `phases`, `total`, `achieved`,
  `objective`) are still written beside them with the same values, for version 1's
  readers; use the unit-named ones.

{table}
"""
