"""Every PostgreSQL server drkit runs: started, waited for, stopped and inspected here.

drkit runs servers in two roles, with one class underneath (:class:`PostgresServer`):

* :class:`LocalCluster`: a throwaway cluster drkit initdb's in a directory of its own
  (``data/``, ``sock/``, ``server.log``), on a free port on 127.0.0.1 and a private socket
  directory, its superuser ``postgres`` with a random password: ``drkit demo``, a
  logical drill's scratch cluster, the tests and the benchmarks;
* a data directory that point-in-time recovery filled from a base backup
  (:mod:`drkit.restore.pitr`): the source's roles, so it is reached with the policy's
  credentials; a physical drill is handed the same object to validate and tear down.

Whatever the role, ``pg_ctl`` runs as the cluster's OS user (PostgreSQL refuses to run
as root: when drkit runs as root, the cluster's files and processes belong to the
``postgres`` OS user, or ``$DRKIT_CLUSTER_USER``), every wait is bounded, and whether a
server runs is read from its ``postmaster.pid``, never guessed from its log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drkit.errors import OperationError, SubprocessError
from drkit.pg.binaries import binary_major, find_server

RUN_AS_ENV = "DRKIT_CLUSTER_USER"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket  # here: importing drkit.pg stays cheap for the WAL commands

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


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir``'s ``postmaster.pid``, or None."""
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def postmaster_running(data_dir: Path) -> bool:
    """Whether the postmaster of ``data_dir``'s pid file lives (a pid that is not ours to
    signal belongs to another process since: not this server)."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class PostgresServer:
    """One PostgreSQL server drkit runs: its data directory, port, socket directory and
    log, the OS user it runs as, and the programs of its major.

    ``login`` is a connection string whose role, password and options reach it (its
    host, port and database are replaced); ``temp_dirs`` are directories made for this
    server alone, removed with it by :meth:`destroy`.  ``name`` says what it is in
    messages ("server", "recovering server")."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        socket_dir: Path | None = None,
        log_file: Path | None = None,
        login: str = "",
        superuser: str = "postgres",
        os_user: str | None = None,
        major: int | None = None,
        bin_dir: Path | None = None,
        temp_dirs: Sequence[Path] = (),
        name: str = "server",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        #: where its Unix socket is (None: reached over TCP only)
        self.socket_dir = Path(socket_dir) if socket_dir is not None else None
        #: where pg_ctl sends its output (None: the data directory's own logging)
        self.log_file = Path(log_file) if log_file is not None else None
        self.login = login
        self.superuser = superuser
        self.os_user = os_user
        #: The server's major: when given, exactly that major's programs run the cluster.
        self.major = major
        #: Where initdb/pg_ctl/postgres come from (found on first use unless given).
        self.bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.temp_dirs = list(temp_dirs)
        self.name = name

    def bin(self, name: str) -> str:
        """A server program of this cluster: all from one bin directory, of exactly its major."""
        if self.bin_dir is None:
            install = find_server(self.major, for_user=self.os_user)
            self.bin_dir, self.major = install.bin_dir, install.major or self.major
        elif self.major is None:
            self.major = binary_major(str(self.bin_dir / "pg_ctl"))
        return str(self.bin_dir / name)

    # -- lifecycle ----------------------------------------------------------------

    def ctl(
        self, *args: str, timeout: float, what: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``pg_ctl -D DATA ARGS`` as the cluster's OS user, within ``timeout`` seconds."""
        command = [self.bin("pg_ctl"), "-D", str(self.data_dir), *args]
        return run_as(command, self.os_user, what=what, timeout=timeout, check=check)

    def start(self, timeout: float = 120, *, wait: bool = True, what: str | None = None) -> None:
        """Start the server; ``wait``: until it accepts connections (``-w``), else return
        once it is launched (``-W``: a recovery may never accept connections)."""
        waiting = ["-w", "-t", str(int(timeout))] if wait else ["-W"]
        logging_to = ["-l", str(self.log_file)] if self.log_file is not None else []
        self.ctl(
            *logging_to,
            *waiting,
            "start",
            what=what or f"starting PostgreSQL on port {self.port} (log: {self.log_file})",
            timeout=timeout + 30,
        )

    def stop(
        self,
        mode: str = "fast",
        timeout: float = 120,
        *,
        check: bool = False,
        what: str | None = None,
    ) -> None:
        """Stop the server if it runs (``mode``: fast, immediate), waiting up to
        ``timeout`` seconds; ``check``: a pg_ctl that fails raises."""
        if not self.is_running():
            return
        self.ctl(
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            what=what,
            check=check,
            timeout=timeout + 30,
        )

    def destroy(self) -> None:
        """Stop the server (immediately) and remove the directories made for it."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        for directory in self.temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- inspecting ---------------------------------------------------------------

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def pid(self) -> int | None:
        """The postmaster's pid from its pid file, or None."""
        return postmaster_pid(self.data_dir)

    def is_running(self) -> bool:
        """Whether the postmaster of the pid file lives."""
        return postmaster_running(self.data_dir)

    def log_text(self) -> str:
        if self.log_file is None:
            return ""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def last_fatal(self) -> str:
        """The server's last FATAL or PANIC line, for error messages only."""
        fatal = [ln for ln in self.log_text().splitlines() if "FATAL" in ln or "PANIC" in ln]
        return fatal[-1].strip() if fatal else ""

    # -- connecting ---------------------------------------------------------------

    def dsn(self, dbname: str | None = None, *, host: str = "127.0.0.1") -> str:
        """A connection string to this server (``dbname``: else the login's database)."""
        from psycopg.conninfo import make_conninfo

        params = {"host": host, "port": str(self.port)}
        if dbname is not None:
            params["dbname"] = dbname
        return make_conninfo(self.login, **params)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the server accepts a connection; the last refusal after ``timeout``."""
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

    def query(self, sql: str) -> Any:
        """The first row of ``sql`` (autocommit), over the socket, else TCP."""
        import psycopg

        from drkit.errors import DatabaseError

        last: Exception | None = None
        hosts = [str(self.socket_dir)] if self.socket_dir is not None else []
        for host in (*hosts, "127.0.0.1"):
            try:
                with psycopg.connect(self.dsn(host=host), autocommit=True, connect_timeout=5) as c:
                    return c.execute(sql).fetchone()
            except psycopg.Error as exc:
                last = exc
        raise DatabaseError(f"cannot query the {self.name} on port {self.port}: {last}")

    def current_timeline(self) -> int:
        """The timeline the server writes (from the name of its current WAL file)."""
        row = self.query("SELECT pg_walfile_name(pg_current_wal_lsn())")
        return int(str(row[0])[:8], 16)


class LocalCluster(PostgresServer):
    """A throwaway cluster drkit initdb's in ``base_dir`` (``data/``, ``sock/``,
    ``server.log``), reached as ``postgres`` with its own password."""

    socket_dir: Path
    log_file: Path

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
        base_dir = Path(base_dir)
        super().__init__(
            base_dir / "data",
            port=port or free_port(),
            socket_dir=base_dir / "sock",
            log_file=base_dir / "server.log",
            os_user=user if user is not None else cluster_os_user(),
            major=major,
            bin_dir=bin_dir,
            temp_dirs=[base_dir],
        )
        self.base_dir = base_dir
        if password is None:
            import secrets

            password = secrets.token_urlsafe(18)
        self.password = password

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
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="drkit-pg-"))
        cluster = cls(base_dir, major=major, bin_dir=bin_dir)
        try:
            cluster.initdb(settings=settings, fast=fast, initdb_args=initdb_args)
            if start:
                cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

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
        """Append settings to postgresql.conf (the last one of a name wins)."""
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

    def __enter__(self) -> LocalCluster:
        return self

    # -- connecting ---------------------------------------------------------------

    def dsn(
        self, dbname: str | None = "postgres", *, host: str = "127.0.0.1", password: bool = True
    ) -> str:
        """A connection URL to this cluster (TCP unless ``host`` names the socket dir)."""
        from urllib.parse import quote

        auth = f"{self.superuser}:{quote(self.password, safe='')}" if password else self.superuser
        where = quote(host, safe="") if host.startswith("/") else host
        database = quote(dbname if dbname is not None else "postgres", safe="")
        return f"postgresql://{auth}@{where}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; its URL."""
        from psycopg import sql

        from drkit.pg.connect import connect

        with connect(self.dsn()) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name`` if it exists, its sessions ended."""
        from psycopg import sql

        from drkit.pg.connect import connect

        with connect(self.dsn()) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
