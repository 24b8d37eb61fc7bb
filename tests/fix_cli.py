"""The command line for the tests, loaded as a pytest plugin (tests/conftest.py).

``make_policy`` writes a policy directory, ``run_drkit`` runs the real ``drkit`` as a
subprocess, ``run_cli`` runs the same entry in the test's own process (no interpreter
start: for every case that is not about the process itself); :func:`valid` checks a ``--json`` document against its published schema;
``age_key`` makes age key pairs for encrypted repositories; :func:`drill` and
:func:`checks_by_name` run ``drkit drill`` and read its checks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drkit.pg import chown_tree, cluster_os_user
from tests.builders import write_policy
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget

try:
    import jsonschema
except ImportError:  # pragma: no cover - a missing test dependency fails, never skips
    jsonschema = None


REPO_ROOT = Path(__file__).resolve().parent.parent


PolicyWriter = Callable[..., Path]


@pytest.fixture
def make_policy(tmp_path: Path) -> PolicyWriter:
    """Write ``<tmp>/policies/<env>.yaml``; returns the policy directory."""
    policy_dir = tmp_path / "policies"

    def write(
        env: str,
        db_url: str,
        repo: RepoTarget | dict[str, Any],
        **extra: Any,
    ) -> Path:
        repository = repo.policy_block() if isinstance(repo, RepoTarget) else dict(repo)
        repository.update(extra.pop("repository", {}))
        write_policy(policy_dir, env, db_url, repository, **extra)
        chown_tree(policy_dir, cluster_os_user())
        return policy_dir

    return write


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


DrkitRunner = Callable[..., Result]


@pytest.fixture
def run_drkit() -> DrkitRunner:
    """Run the real ``drkit`` CLI as a subprocess (``python -m drkit``)."""

    def run(
        *args: str,
        policy_dir: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = False,
    ) -> Result:
        cmd = [sys.executable, "-m", "drkit"]
        if policy_dir is not None:
            cmd += ["--policy-dir", str(policy_dir)]
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"drkit {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return result

    return run


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> DrkitRunner:
    """Run ``drkit`` in this process: the console script's own entry
    (:func:`drkit.cli.entry.main`) with the argv, stdout and stderr captured, ``env``
    set for the call only; the same :class:`Result` as ``run_drkit`` without starting an
    interpreter.  The subprocess stays for what is about the process itself: the lean WAL
    path PostgreSQL runs, signals, a closed pipe, the interpreter's start-up."""
    from drkit.cli import common
    from drkit.cli.entry import main

    def run(
        *args: str,
        policy_dir: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,  # no process to time out: kept for run_drkit's signature
        check: bool = False,
    ) -> Result:
        argv = ["--policy-dir", str(policy_dir)] if policy_dir is not None else []
        argv += list(args)
        # a fresh process's state: no options of an earlier call, consoles made anew (they
        # read COLUMNS when made), the root logger as the test had it
        vars(common.state).update(vars(common.State()))
        for terminal in (common.out, common.err):
            terminal.__dict__.pop("console", None)
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        # drkit's own loggers as a fresh process has them (the daemon raises "drkit" to
        # INFO: left so, every later call would print its INFO lines)
        ours = [
            logger
            for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger) and (name == "drkit" or name.startswith("drkit."))
        ]
        levels = [(logger, logger.level) for logger in ours]
        for logger in ours:
            logger.setLevel(logging.NOTSET)
        capsys.readouterr()
        with monkeypatch.context() as scoped:
            for name, value in (env or {}).items():
                scoped.setenv(name, value)
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            else:  # pragma: no cover - main always ends with SystemExit
                code = 0
            finally:
                root.handlers[:] = handlers
                root.setLevel(level)
                for logger, was in levels:
                    logger.setLevel(was)
                drkit_logger = logging.getLogger("drkit")
                if drkit_logger not in ours:
                    drkit_logger.setLevel(logging.NOTSET)
        captured = capsys.readouterr()
        result = Result(code, captured.out, captured.err)
        if check and code != 0:
            raise AssertionError(f"drkit {' '.join(args)} exited {code}: {result.stderr}")
        return result

    return run


def drill(run_drkit: DrkitRunner, policy_dir: Path, scratch: Path, *args: str, **kw: Any) -> Any:
    return run_drkit(
        "drill", "prod", *args, policy_dir=policy_dir, env={"DRKIT_TMPDIR": str(scratch)}, **kw
    )


def checks_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


REPO = Path(__file__).resolve().parent.parent


OUTPUT = REPO / "docs" / "schemas" / "output"


def schema(name: str) -> dict[str, Any]:
    assert jsonschema is not None, "install jsonschema: pip install -e '.[test]'"
    path = OUTPUT / f"{name}.schema.json"
    assert path.exists(), f"{path} is missing: run python -m drkit.docgen"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def errors(document: Any, against: dict[str, Any]) -> list[str]:
    assert jsonschema is not None
    validator = jsonschema.Draft202012Validator(
        against, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def own_shape(name: str) -> dict[str, Any]:
    """The command's own document (not the bare failure alternative)."""
    full = schema(name)
    refs = [option["$ref"] for option in full["anyOf"] if option["$ref"] != "#/$defs/Failure"]
    return {"$schema": full["$schema"], "$ref": refs[0], "$defs": full["$defs"]}


#: documents that may write a key their schema does not name; every other document's
#: keys must all be named (:func:`undeclared`): one description, the model core returns,
#: so nothing is written that the schema does not say
UNDECLARED_ALLOWED: frozenset[str] = frozenset()


def undeclared(document: Any, shape: dict[str, Any]) -> list[str]:
    """The keys of ``document`` its schema ``shape`` does not name (the schemas allow
    unnamed keys, so validation alone never sees a key written beside the model)."""
    defs = shape.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def walk(value: Any, node: dict[str, Any], where: str) -> list[str]:
        node = resolve(node)
        found = [f for option in node.get("anyOf", []) for f in walk(value, option, where)]
        if isinstance(value, dict):
            names, more = node.get("properties"), node.get("additionalProperties")
            for key, item in value.items():
                if names is not None and key in names:
                    found += walk(item, names[key], f"{where}.{key}")
                elif isinstance(more, dict):
                    found += walk(item, more, f"{where}.{key}")
                elif names is not None:
                    found.append(f"{where}.{key}")
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                found += walk(item, node["items"], f"{where}[{i}]")
        return found

    return sorted(set(walk(document, shape, "$")))


def valid(name: str, result: Result, code: int = 0, *, shaped: bool = True) -> dict[str, Any]:
    """``result``'s one document, validated; returns it."""
    assert result.code == code, f"exit {result.code}, wanted {code}: {result.stderr}"
    document: dict[str, Any] = json.loads(result.stdout)  # stdout holds one document only
    problems = errors(document, schema(name))
    assert not problems, f"{name}: {problems}\n{json.dumps(document, indent=2)[:3000]}"
    assert document["ok"] is (code == 0)
    if shaped:  # not only the bare failure document
        problems = errors(document, own_shape(name))
        assert not problems, f"{name} (own shape): {problems}"
        if name not in UNDECLARED_ALLOWED:
            extra = undeclared(document, own_shape(name))
            assert not extra, f"{name}: keys its schema does not name: {extra}"
    if code != 0:
        failure_problems = errors(document, schema("failure"))
        if name != "drill":  # a drill report keeps its own error (a string)
            assert not failure_problems, failure_problems
            assert document["error"]["code"] == code
    return document


AGE = shutil.which("age")


AGE_KEYGEN = shutil.which("age-keygen")


SECRET_MARK = "AGE-SECRET-KEY-"


@dataclass
class AgeKey:
    identity: Path
    recipient: str

    def secret(self) -> str:
        for line in self.identity.read_text().splitlines():
            if line.startswith(SECRET_MARK):
                return line
        raise AssertionError("no secret key in the identity file")


KeyMaker = Callable[[str], AgeKey]


@pytest.fixture
def age_key(tmp_path: Path) -> KeyMaker:
    def make(name: str) -> AgeKey:
        path = tmp_path / "keys" / f"{name}.txt"
        path.parent.mkdir(exist_ok=True)
        subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
        recipient = subprocess.run(
            [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True
        ).stdout.strip()
        assert recipient.startswith("age1")
        return AgeKey(path, recipient)

    return make


def age_decrypt(data: bytes, *identities: AgeKey) -> bytes:
    args = [str(AGE), "-d"]
    for key in identities:
        args += ["-i", str(key.identity)]
    proc = subprocess.run(args, input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


class Env:
    def __init__(self, pg: PgServer, policy_dir: Path, src: str, dsts: dict[str, str]) -> None:
        self.pg = pg
        self.policy_dir = policy_dir
        self.src_name = src
        self.dsts = dsts

    def dsn(self, dbname: str) -> str:
        return self.pg.dsn(dbname)


@pytest.fixture
def envs(
    pg_server: PgServer,
    sample_db: tuple[str, str],
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
) -> Iterator[Env]:
    """prod = the sample database; staging and dev = fresh databases (created by drkit)."""
    src_name, src_url = sample_db
    suffix = uuid.uuid4().hex[:8]
    dsts = {"staging": f"stg_{suffix}", "dev": f"dev_{suffix}", "test": f"tst_{suffix}"}
    policy_dir = make_policy("prod", src_url, file_repo)
    for env, db in dsts.items():
        make_policy(env, pg_server.url(db), file_repo)
    yield Env(pg_server, policy_dir, src_name, dsts)
    for db in dsts.values():
        pg_server.drop_database(db)


def junit(path: Path) -> ET.Element:
    """The root of a junit.xml a drill wrote."""
    return ET.parse(path).getroot()  # noqa: S314 - a file this test's drill just wrote
