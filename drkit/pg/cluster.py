"""Throwaway PostgreSQL clusters from the local binaries (initdb / pg_ctl).

Used by ``drkit demo``, restore drills, point-in-time recovery and the tests.  Each
cluster has its own data directory, a free port on 127.0.0.1 and a private socket
directory.  PostgreSQL refuses to run as root, so when drkit runs as root the cluster's
files and processes belong to the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drkit.errors import OperationError, SubprocessError
from drkit.pg.binaries import binary_major, find_server

log = logging.getLogger(__name__)

RUN_AS_ENV = "DRKIT_CLUSTER_USER"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_os_user() -> str | None:
    """The OS user clusters run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(RUN_AS_ENV, "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise OperationError(
            f"running as root, and PostgreSQL refuses root: create the OS user {name!r} "
            f"(apt-get install postgresql creates 'postgres') or set {RUN_AS_ENV}"
        ) from None
    return name


def chown_tree(path: Path, user: str | None) -> None:
    """Give ``path`` (a file, or a directory and all below it) to ``user``; None: no-op.

    No link is ever followed (directories are walked through descriptors opened without
    following, entries changed with ``follow_symlinks=False``), and a directory is given
    away only after everything in it, ``path`` itself last: a tree that was ours alone
    stays out of ``user``'s reach until the walk is done, so nothing can be swapped into
    it for root to chown."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    ids = (entry.pw_uid, entry.pw_gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for _root, dirs, files, root_fd in os.fwalk(path, topdown=False):
            for name in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, *ids, dir_fd=root_fd, follow_symlinks=False)
    os.lchown(path, *ids)


def run_as(
    args: list[str],
    user: str | None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program (as ``user`` when given), capturing output; failures raise."""
    full_env = dict(os.environ if env is None else env)
    if user is not None:
        entry = pwd.getpwnam(user)
        full_env["HOME"] = entry.pw_dir
        full_env["USER"] = full_env["LOGNAME"] = user
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
            user=user,
            cwd="/",
        )
    except FileNotFoundError:
        raise OperationError(f"{args[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SubprocessError(f"{what or Path(args[0]).name} timed out after {timeout}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SubprocessError(
            f"{what or Path(args[0]).name} failed (exit {proc.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
    return proc


class LocalCluster:
    """A PostgreSQL cluster in ``base_dir`` (``data/``, ``sock/``, ``server.log``)."""

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        major: int | None = None,
        password: str | None = None,
        user: str | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = port or free_port()
        #: The server's major: when given, exactly that major's programs run the cluster.
        self.major = major
        #: Where initdb/pg_ctl/postgres come from (found on first use unless given).
        self.bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.superuser = "postgres"
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.os_user = user if user is not None else cluster_os_user()
        self._owns_base_dir = False

    # -- construction -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        base_dir: Path | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
        major: int | None = None,
        fast: bool = False,
        start: bool = True,
        bin_dir: Path | None = None,
        initdb_args: Sequence[str] = (),
    ) -> LocalCluster:
        """initdb a new cluster (in a fresh temp directory by default) and start it."""
        owns = base_dir is None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="drkit-pg-"))
        cluster = cls(base_dir, major=major, bin_dir=bin_dir)
        cluster._owns_base_dir = owns
        try:
            cluster.initdb(settings=settings, fast=fast, initdb_args=initdb_args)
            if start:
                cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def bin(self, name: str) -> str:
        """A server program of this cluster: all from one bin directory, of exactly its major."""
        if self.bin_dir is None:
            install = find_server(self.major, for_user=self.os_user)
            self.bin_dir, self.major = install.bin_dir, install.major or self.major
        elif self.major is None:
            self.major = binary_major(str(self.bin_dir / "pg_ctl"))
        return str(self.bin_dir / name)

    def initdb(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        fast: bool = False,
        initdb_args: Sequence[str] = (),
    ) -> None:
        """``initdb_args``: extra initdb options (``--wal-segsize=1``, ...)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        os.chmod(self.base_dir, 0o700)
        chown_tree(self.base_dir, self.os_user)
        args = [
            self.bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
        if fast:
            args.append("--no-sync")
        args += list(initdb_args)
        try:
            run_as(args, self.os_user, what="initdb", timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        base_settings: dict[str, Any] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": 40,
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "max_wal_senders": 4,
            "wal_level": "replica",
        }
        if fast:
            base_settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        base_settings.update(settings or {})
        self.write_settings(base_settings)

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        """Append settings to postgresql.auto.conf-style include (last one wins)."""
        lines = []
        for key, value in settings.items():
            if isinstance(value, bool):
                text = "on" if value else "off"
            elif isinstance(value, int | float):
                text = str(value)
            else:
                text = "'" + str(value).replace("'", "''") + "'"
            lines.append(f"{key} = {text}\n")
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\n# drkit\n" + "".join(lines))

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        run_as(
            [
                self.bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            self.os_user,
            what=f"starting PostgreSQL on port {self.port} (log: {self.log_file})",
            timeout=timeout + 30,
        )

    def stop(self, mode: str = "fast", timeout: float = 120) -> None:
        if not self.is_running():
            return
        run_as(
            [
                self.bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            self.os_user,
            check=False,
            timeout=timeout + 30,
        )

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def destroy(self) -> None:
        """Stop the server (immediately) and remove its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- connecting ---------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """A TCP connection URL to this cluster."""
        from urllib.parse import quote

        auth = f"{self.superuser}:{quote(self.password, safe='')}" if password else self.superuser
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        from psycopg import sql

        from drkit.pg.connect import connect

        with connect(self.dsn()) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        from drkit.pg.connect import connect

        with connect(self.dsn()) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
