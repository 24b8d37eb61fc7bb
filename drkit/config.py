"""Policies: loading, ``${VAR}`` expansion and validation.

A policy file is ``<policy-dir>/<ENV>.yaml``; ``ENV`` (the file's stem) names the
environment everywhere else (repository prefix, metrics labels).  Every problem is a
:class:`~drkit.errors.PolicyError` naming the file, the key and what is wrong.  The
``repository`` section is the storage package's: one model per backend, chosen by the
url's scheme (see ARCHITECTURE.md, Storage).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from drkit.cron import check_cron
from drkit.errors import PolicyError, UsageError
from drkit.redact import mask_url as mask_url  # the one masking function, re-exported
from drkit.storage import CompressionConfig, RepositoryConfig

STANDARD_RANKS: dict[str, int] = {"dev": 0, "test": 1, "staging": 2, "prod": 3}
POLICY_DIR_ENV = "DRKIT_POLICY_DIR"
DEFAULT_POLICY_DIR = Path("policies")

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_DURATION_RE = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


# ---------------------------------------------------------------------------
# Small value parsers shared by policies and the command line
# ---------------------------------------------------------------------------


def parse_duration(value: object) -> timedelta:
    """``"1h"``, ``"30m"``, ``"1h30m"``, ``"7d"``, ``"90s"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as 30m, 1h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _duration_seconds(value, value)
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as 30m, 1h or 7d")
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    pos = 0
    seconds = 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 30m, 1h, 1h30m, 7d)")
    return _duration_seconds(seconds, value)


def _duration_seconds(seconds: float, value: object) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # inf, nan, or beyond 999999999 days
        raise ValueError(f"{str(value)[:40]!r} is not a usable duration (too large)") from None


#: what a size looks like in a policy: the JSON schema's pattern, and the gate in front of
#: pydantic's ByteSize, whose own pattern reads a prefix ("10GiB of data" would be 10 GiB)
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]|[bB])?\s*$"
_SIZE_RE = re.compile(SIZE_PATTERN)


def parse_size(value: object) -> int:
    """``"10GiB"``, ``"500MB"``, ``"1.5TiB"`` or a number of bytes, as bytes: pydantic's
    :class:`~pydantic.ByteSize` (KB = 1000, KiB = 1024) on a whole size, nothing more."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a size is a number of bytes or a string such as 10GiB")
    if isinstance(value, int) and value < 0:
        raise ValueError("a size cannot be negative")
    if isinstance(value, str) and _SIZE_RE.fullmatch(value) is None:
        raise ValueError(f"{value[:40]!r} is not a size (use e.g. 10GiB, 500MiB or bytes)")
    return int(_byte_size().validate_python(value.strip() if isinstance(value, str) else value))


@functools.cache
def _byte_size() -> TypeAdapter[ByteSize]:
    return TypeAdapter(ByteSize)


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for people: ``1h30m``, ``45s``."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


# ---------------------------------------------------------------------------
# ${VAR} expansion over the parsed YAML tree, so errors can name the key
# ---------------------------------------------------------------------------


def expand_vars(
    node: Any,
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    error: Callable[[str], Exception] = PolicyError,
    path: str = "",
) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree.

    Where ``VAR`` is unset and ``VAR_FILE`` names a file, the file's text is the value
    (one trailing newline dropped): Docker secrets, so a password never sits in the
    environment.  Both set is refused rather than one picked; a named file that cannot
    be read is an error, never the default.  Errors name the variable and the file,
    never a value.
    """
    environ = os.environ if env is None else env
    if isinstance(node, dict):
        return {
            k: expand_vars(
                v, source=source, env=environ, error=error, path=f"{path}.{k}" if path else str(k)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            expand_vars(v, source=source, env=environ, error=error, path=f"{path}[{i}]")
            for i, v in enumerate(node)
        ]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        file_var = f"{name}_FILE"
        file_name = environ.get(file_var)
        if file_name is not None and value is not None:
            raise error(
                f"{source}: {path}: both {name} and {file_var} are set "
                f"(unset one: the value comes from exactly one place)"
            )
        if file_name is not None:
            try:
                value = Path(file_name).read_text(encoding="utf-8").removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
                raise error(
                    f"{source}: {path}: {file_var}: cannot read {file_name} ({reason}); "
                    f"mount the secret file or unset {file_var}"
                ) from None
        if value is None or (value == "" and default is not None):
            if default is None:
                raise error(
                    f"{source}: {path}: environment variable {name} is not set "
                    f"(set it or {file_var}, or write ${{{name}:-default}})"
                )
            return default
        return value

    expanded = _VAR_RE.sub(substitute, node)
    return expanded


# ---------------------------------------------------------------------------
# The policy model
# ---------------------------------------------------------------------------


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(StrictModel):
    url: SecretStr
    databases: list[str] | None = None

    @field_validator("url")
    @classmethod
    def _url_not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("database url is empty")
        from drkit.pg import check_url

        try:
            check_url(v.get_secret_value())
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("invalid database url: ")) from None
        return v

    @field_validator("databases")
    @classmethod
    def _databases_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("list at least one database, or leave the key out")
            if len(set(v)) != len(v):
                raise ValueError("a database is listed twice")
            if any(not name for name in v):
                raise ValueError("empty database name")
        return v

    def database_names(self) -> list[str]:
        """The configured databases; without ``databases:``, the one libpq connects the url
        to (service file, ``PGDATABASE``, defaults: asked of libpq, never guessed)."""
        if self.databases:
            return list(self.databases)
        from drkit.pg import resolve

        return [resolve(self.url.get_secret_value()).dbname]


class SanitizeSchedule(StrictModel):
    """``schedule.sanitize``: when and from where the scheduled sanitized copy runs."""

    cron: str = Field(description="When the copy runs (cron, in schedule.timezone).")
    source: str = Field(
        min_length=1, description="The environment copied from (its policy in the same directory)."
    )
    rules: Path | None = Field(
        default=None,
        description="The rules file; default sanitize_rules/SOURCE-to-ENV.yaml.",
    )


#: each field but ``timezone`` is a job's cron expression, named as the job (what each
#: runs is its row of drkit.schedule.jobs.JOBS; no docstring: it would be the schema's);
#: ``sanitize`` carries its cron with the copy's source
class ScheduleConfig(StrictModel):
    logical_backup: str | None = None
    physical_backup: str | None = None
    #: incremental base backups (PostgreSQL 17+) between the full ones of physical_backup
    physical_incremental_backup: str | None = None
    #: ``drkit copy`` besides after each backup (which every backup job runs); ``copy``
    #: itself is a name pydantic's models already use
    copies: str | None = None
    prune: str | None = None
    drill: str | None = None
    sanitize: SanitizeSchedule | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        check_timezone(v)
        return v

    @model_validator(mode="after")
    def _crons(self) -> ScheduleConfig:
        for name in self.job_names():
            expr = self.cron(name)
            if expr is not None:
                try:
                    check_cron(expr, self.timezone)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self

    @classmethod
    def job_names(cls) -> list[str]:
        """The jobs a policy can schedule, in the order ``schedule show`` lists them."""
        return [name for name in cls.model_fields if name != "timezone"]

    def cron(self, name: str) -> str | None:
        """The cron expression of job ``name``, or None where it is not scheduled."""
        value = getattr(self, name)
        return value.cron if isinstance(value, SanitizeSchedule) else value

    def jobs(self) -> dict[str, str]:
        """job name -> cron expression, for the entries that are set."""
        return {name: expr for name in self.job_names() if (expr := self.cron(name))}


class RetentionConfig(StrictModel):
    daily: int = Field(default=0, ge=0, le=100000)
    weekly: int = Field(default=0, ge=0, le=100000)
    monthly: int = Field(default=0, ge=0, le=100000)
    orphan_grace: timedelta = timedelta(hours=24)
    #: point-in-time recovery over this last stretch only (None: from the oldest kept
    #: base backup on); older kept base backups keep just the WAL that makes them
    #: consistent
    wal: timedelta | None = None

    @field_validator("orphan_grace", mode="before")
    @classmethod
    def _grace(cls, v: object) -> timedelta:
        return parse_duration(v)

    @property
    def wal_text(self) -> str | None:
        """``retention.wal`` as the policy writes it (``7d``), None when absent."""
        return format_duration(self.wal) if self.wal is not None else None

    @field_validator("wal", mode="before")
    @classmethod
    def _wal(cls, v: object) -> timedelta | None:
        if v is None:
            return None
        duration = parse_duration(v)
        if duration <= timedelta(0):
            raise ValueError("retention.wal must be a positive duration (e.g. 7d), or absent")
        return duration


class BackupConfig(StrictModel):
    """Logical backups: above ``parallel_threshold`` (pg_database_size) a backup without
    ``--jobs`` dumps in directory format with ``jobs`` parallel pg_dump workers."""

    parallel_threshold: Annotated[
        int | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": SIZE_PATTERN},
                    {"type": "integer", "minimum": 0},
                    {"type": "null"},
                ]
            }
        ),
    ] = 10 * 1024**3
    jobs: int = Field(default=2, ge=1, le=64)

    @field_validator("parallel_threshold", mode="before")
    @classmethod
    def _size(cls, v: object) -> int | None:
        return None if v is None else parse_size(v)


class ObjectivesConfig(StrictModel):
    rpo: timedelta | None = None
    rto: timedelta | None = None

    @field_validator("rpo", "rto", mode="before")
    @classmethod
    def _duration(cls, v: object) -> timedelta | None:
        return None if v is None else parse_duration(v)

    # seconds, None when unset: a 0s objective is an objective (timedelta(0) is falsy)
    @property
    def rpo_seconds(self) -> float | None:
        return None if self.rpo is None else self.rpo.total_seconds()

    @property
    def rto_seconds(self) -> float | None:
        return None if self.rto is None else self.rto.total_seconds()


class SqlCheck(StrictModel):
    name: str
    query: str
    database: str | None = None


class DrillChecksConfig(StrictModel):
    row_counts: bool = True
    sql: list[SqlCheck] = Field(default_factory=list)
    amcheck: bool = True


class DrillConfig(StrictModel):
    checks: DrillChecksConfig = DrillChecksConfig()


class WalArchiverConfig(StrictModel):
    """How ``drkit wal-push`` archives: itself (sync) or through a background worker."""

    mode: Literal["sync", "async"] = "sync"
    workers: int = Field(default=0, ge=0, le=64)
    wait: float = Field(default=60.0, gt=0, le=3600)
    idle_exit: float = Field(default=30.0, gt=0, le=86400)
    #: the compression level of WAL segments (repository.compression's algorithm); None:
    #: repository.compression.level.  Level 1 compresses WAL twice as fast as zstd's 3
    #: for a few percent of size: a busy primary writes WAL faster than level 3 keeps up.
    compression_level: int | None = Field(default=1, ge=1, le=22)


class CopyConfig(RepositoryConfig):
    """One entry of ``copies``: another repository that holds the primary's backups and
    WAL, byte for byte (``drkit copy``), with its own ``retention`` (absent: the
    primary's).

    The keys are the ``repository`` section's.  ``encryption`` absent means the primary's:
    objects are copied as they are stored, never decrypted on the way (the backup host
    holds no private key), so a copy is encrypted for the primary's recipients and
    ``encryption`` may only name other identity files to read them with.  ``compression``
    is the primary's for the same reason and is refused here."""

    retention: RetentionConfig | None = None

    @model_validator(mode="after")
    def _as_its_backend(self) -> CopyConfig:
        if "compression" in self.model_fields_set:
            raise ValueError(
                "compression: a copy holds the primary's objects as they are stored, so "
                "their compression is repository.compression's: remove it"
            )
        self.repository()  # the url checked as its backend's model checks it
        return self

    def repository(self) -> RepositoryConfig:
        """The copy as a ``repository`` section: the model of its url's scheme."""
        return RepositoryConfig.model_validate(self.model_dump(exclude={"retention"}))


class WalStreamingConfig(StrictModel):
    """``drkit wal-receive``: WAL streamed from a replication slot, beside archive_command.

    ``wal_streaming: true`` turns it on with the defaults; a mapping turns it on with its
    settings (``enabled: false`` inside one keeps them and turns it off)."""

    enabled: bool = False
    #: how often the segment being written (``.partial``) is stored, in seconds
    partial_interval: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("partial_interval", mode="before")
    @classmethod
    def _interval(cls, v: object) -> float:
        return parse_duration(v).total_seconds()


class Policy(StrictModel):
    """One environment's policy, validated.  ``name`` is the file's stem."""

    name: str
    source: str
    environment: str
    rank: int
    protected: bool = False  # never a sanitize target (default true for environment prod)
    database: DatabaseConfig
    repository: RepositoryConfig
    schedule: ScheduleConfig = ScheduleConfig()
    wal_archiving: bool = False
    wal_archiver: WalArchiverConfig = WalArchiverConfig()
    wal_streaming: WalStreamingConfig = WalStreamingConfig()
    retention: RetentionConfig = RetentionConfig()
    backup: BackupConfig = BackupConfig()
    objectives: ObjectivesConfig = ObjectivesConfig()
    drill: DrillConfig = DrillConfig()
    copies: dict[str, CopyConfig] = Field(default_factory=dict)
    #: set by :meth:`for_copy` (never by a policy file): this policy reads and writes the
    #: copy of that name instead of the primary repository
    copy_name: str | None = None

    @model_validator(mode="after")
    def _copies_readable(self) -> Policy:
        """A copy holds the primary's stored bytes: the same recipients, or it could not be
        read with the keys that read the primary (and re-encrypting would need the
        private key on the backup host)."""
        primary = self.repository.encryption
        for name, copy in self.copies.items():
            if copy.encryption is None:
                continue
            theirs = sorted(copy.encryption.recipients)
            if primary is None or theirs != sorted(primary.recipients):
                raise ValueError(
                    f"copies.{name}.encryption: recipients differ from "
                    "repository.encryption's; drkit copies objects as stored, without "
                    "re-encrypting them (the backup host holds no private key): list the "
                    "same recipients (identity files may differ), or leave encryption out"
                )
        return self

    def for_copy(self, name: str) -> Policy:
        """This environment as seen in its copy ``name``: the copy's repository (encrypted
        as the primary's unless it names its own identity files) and its retention; the
        rest of the policy is the environment's.  An unknown name is a usage error."""
        copy = self.copies.get(name)
        if copy is None:
            from drkit.suggest import did_you_mean

            known = ", ".join(sorted(self.copies)) or "none"
            raise UsageError(
                f"--repo {name}: {self.name} has no copy of that name"
                f"{did_you_mean(name, self.copies)} (copies: {known})"
            )
        repository = copy.repository().model_copy(
            update={
                "compression": self.repository.compression,
                "encryption": copy.encryption or self.repository.encryption,
            }
        )
        return self.model_copy(
            update={
                "repository": repository,
                "retention": copy.retention or self.retention,
                "copies": {},
                "copy_name": name,
            }
        )

    @field_validator("wal_streaming", mode="before")
    @classmethod
    def _streaming_switch(cls, v: object) -> object:
        """``true``/``false`` is the switch alone; a mapping means on unless it says not."""
        if isinstance(v, bool):
            return {"enabled": v}
        if isinstance(v, dict):
            return {"enabled": True, **v}
        return v

    @model_validator(mode="after")
    def _sanitize_target_allowed(self) -> Policy:
        """A scheduled copy writes into this environment: refused here, at load and in
        ``policy check``, where it could never run (the copy's own guards hold too)."""
        planned = self.schedule.sanitize
        if planned is None:
            return self
        if self.protected:
            raise ValueError(
                f"schedule.sanitize: {self.name} is protected and never a sanitize target "
                "(schedule the copy in the target environment's policy)"
            )
        if planned.source == self.name:
            raise ValueError(
                f"schedule.sanitize.source: {planned.source} is this environment; "
                "name the environment copied from"
            )
        return self

    @model_validator(mode="after")
    def _wal_level_in_range(self) -> Policy:
        try:
            self.wal_compression()  # the repository algorithm's own range check
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"wal_archiver.compression_level: {reason}") from None
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.schedule.timezone)

    def wal_compression(self) -> CompressionConfig:
        """repository.compression with the level WAL segments are stored at."""
        comp = self.repository.compression
        level = self.wal_archiver.compression_level
        if level is None or comp.algorithm == "none" or level == comp.level:
            return comp
        return CompressionConfig(algorithm=comp.algorithm, level=level)

    def masked(self) -> dict[str, Any]:
        """The resolved policy as plain data with every secret masked."""
        data = self.model_dump(mode="json", exclude={"source", "copy_name"})
        data["database"]["url"] = mask_url(self.database.url.get_secret_value())
        if self.repository.endpoint_url:
            data["repository"]["endpoint_url"] = mask_url(self.repository.endpoint_url)
        data["objectives"] = {
            k: (format_duration(v) if v is not None else None)
            for k, v in (("rpo", self.objectives.rpo), ("rto", self.objectives.rto))
        }
        data["retention"]["orphan_grace"] = format_duration(self.retention.orphan_grace)
        if self.retention.wal is not None:
            data["retention"]["wal"] = format_duration(self.retention.wal)
        for name, copy in self.copies.items():
            del data["copies"][name]["compression"]  # the primary's: objects copied as stored
            if copy.endpoint_url:
                data["copies"][name]["endpoint_url"] = mask_url(copy.endpoint_url)
            if copy.retention is not None:
                kept = data["copies"][name]["retention"]
                kept["orphan_grace"] = format_duration(copy.retention.orphan_grace)
                if copy.retention.wal is not None:
                    kept["wal"] = format_duration(copy.retention.wal)
        return data


_POLICY_KEYS = {
    "environment",
    "rank",
    "protected",
    "database",
    "repository",
    "schedule",
    "wal_archiving",
    "wal_archiver",
    "wal_streaming",
    "retention",
    "backup",
    "objectives",
    "drill",
    "copies",
}


def _format_validation_error(source: str, exc: ValidationError) -> str:
    from drkit.suggest import model_keys, unknown_key

    problems = []
    for err in exc.errors():
        parts = [p for p in err["loc"] if not str(p).startswith("function-")]
        loc = ".".join(str(p) for p in parts)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden" and parts:
            msg = unknown_key(parts[-1], model_keys(Policy, parts[:-1]))
        problems.append(f"{loc or '(top level)'}: {msg}")
    return f"{source}: " + "; ".join(problems)


def read_yaml(path: Path, error: Callable[[str], Exception]) -> Any:
    """Read a YAML file; any problem is ``error("<file>: <what>")``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where} invalid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{path}: YAML nests too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of thousands of digits
        raise error(f"{path}: invalid YAML value: {str(exc)[:120]}") from None


def parse_policy(name: str, raw: Any, source: str) -> Policy:
    """Validate a parsed policy document (after reading YAML, before expansion)."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: a policy is a mapping of keys (environment, database, ...)")
    unknown = sorted(str(k) for k in raw if k not in _POLICY_KEYS)
    if unknown:
        from drkit.suggest import unknown_key

        raise PolicyError(f"{source}: {unknown[0]}: {unknown_key(unknown[0], _POLICY_KEYS)}")
    data = expand_vars(raw, source=source)
    env_name = data.get("environment", name)
    if not isinstance(env_name, str) or not env_name:
        raise PolicyError(f"{source}: environment: must be a non-empty string")
    rank = data.get("rank")
    if rank is None:
        if env_name not in STANDARD_RANKS:
            raise PolicyError(
                f"{source}: rank: required for environment {env_name!r} "
                f"(the standard names {', '.join(STANDARD_RANKS)} have one)"
            )
        data["rank"] = STANDARD_RANKS[env_name]
    elif isinstance(rank, bool) or not isinstance(rank, int):
        raise PolicyError(f"{source}: rank: must be an integer")
    protected = data.get("protected")
    if protected is None:
        data["protected"] = env_name == "prod"
    elif not isinstance(protected, bool):
        raise PolicyError(f"{source}: protected: must be true or false")
    for required in ("database", "repository"):
        if required not in data:
            raise PolicyError(f"{source}: {required}: missing")
    data["environment"] = env_name
    try:
        return Policy(name=name, source=source, **data)
    except ValidationError as exc:
        raise PolicyError(_format_validation_error(source, exc)) from None
    except (TypeError, RecursionError) as exc:
        raise PolicyError(f"{source}: invalid policy: {exc}") from None


def resolve_policy_dir(policy_dir: Path | str | None = None) -> Path:
    if policy_dir is not None:
        return Path(policy_dir)
    env_dir = os.environ.get(POLICY_DIR_ENV)
    return Path(env_dir) if env_dir else DEFAULT_POLICY_DIR


_ENV_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def policy_path(env: str, policy_dir: Path | str | None = None) -> Path:
    if not _ENV_NAME_RE.match(env):
        raise UsageError(f"{env!r} is not an environment name (letters, digits, '_', '-', '.')")
    return resolve_policy_dir(policy_dir) / f"{env}.yaml"


def load_policy(env: str, policy_dir: Path | str | None = None) -> Policy:
    """Load and validate ``<policy-dir>/<env>.yaml``."""
    path = policy_path(env, policy_dir)
    if not path.exists():
        directory = path.parent
        from drkit.suggest import did_you_mean

        found = available_environments(directory)
        known = ", ".join(found) or "none"
        raise PolicyError(
            f"{path}: no policy for environment {env!r} in {directory}"
            f"{did_you_mean(env, found)} (policies found: {known})"
        )
    return parse_policy(env, read_yaml(path, PolicyError), str(path))


def available_environments(policy_dir: Path | str | None = None) -> list[str]:
    directory = resolve_policy_dir(policy_dir)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file())


def load_policies(
    envs: list[str] | None = None, policy_dir: Path | str | None = None
) -> list[Policy]:
    names = envs or available_environments(policy_dir)
    if not names:
        raise PolicyError(f"{resolve_policy_dir(policy_dir)}: no policy files (*.yaml) found")
    return [load_policy(name, policy_dir) for name in names]


@dataclass(frozen=True)
class PolicyProblem:
    env: str
    message: str


def check_policies(
    envs: list[str] | None, policy_dir: Path | str | None
) -> Iterator[tuple[str, Policy | PolicyProblem]]:
    """Validate each policy, yielding either the policy or its problem (for ``policy check``)."""
    names = envs or available_environments(policy_dir)
    if not names:
        raise PolicyError(f"{resolve_policy_dir(policy_dir)}: no policy files (*.yaml) found")
    for name in names:
        try:
            yield name, load_policy(name, policy_dir)
        except PolicyError as exc:
            yield name, PolicyProblem(name, str(exc))


def parse_timestamp(text: str, *, option: str = "timestamp") -> datetime:
    """An ISO 8601 timestamp that carries a zone; a naive one is a usage error."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-27T10:15:00Z)"
        ) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise UsageError(
            f"{option}: {text!r} has no time zone; add one (Z or +01:00) — drkit never "
            "guesses local time"
        )
    return ts
