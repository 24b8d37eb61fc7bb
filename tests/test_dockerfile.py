"""The Dockerfile and the production compose file, checked statically (no Docker engine
here): pinned base images, a non-root user, a HEALTHCHECK on /healthz, an entry point
that is the installed console script, and the compose wiring of the scheduler and its monitoring — valid against the
Compose Specification (check-jsonschema), startable from a fresh clone with the shipped
examples, Prometheus alerting through Alertmanager (amtool), Grafana provisioned."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from drkit.schedule.endpoints import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.prod.yml"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(image, name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def pinned(image: str, stage_names: set[str]) -> bool:
    if image in stage_names:
        return True
    if "@sha256:" in image:
        return True
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    return bool(re.match(r"^v?\d+\.\d+(\.\d+)?", tag))


def test_the_parser_and_pin_check_can_fail() -> None:
    args, stages = parse_dockerfile("ARG B=python:latest\nFROM ${B} AS x\nFROM x\nUSER root\n")
    assert args == {"B": "python:latest"}
    assert not pinned(stages[0].image, set())
    assert pinned(stages[1].image, {"x"})
    assert not pinned("python", set()) and not pinned("postgres:16", set())
    assert pinned("python:3.12.8-slim-bookworm", set())
    assert pinned("prom/prometheus:v2.55.1", set())


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_base_images_are_pinned(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    names = {s.name for s in stages if s.name}
    for stage in stages:
        assert pinned(stage.image, names), f"FROM {stage.image} is not pinned to a release"
        assert not stage.image.endswith(":latest")


def test_final_stage_runs_as_non_root_with_healthcheck(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert final.name == "drkit"
    users = final.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # the user is created in the image, after which nothing runs as root
    keywords = [kw for kw, _ in final.instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:]
    assert any("useradd" in run and user in run for run in final.all("RUN"))

    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0]
    assert "CMD" in check and "urlopen" in check
    env = " ".join(final.all("ENV"))
    match = re.search(r"DRKIT_HEALTHCHECK_URL=(\S+)", env)
    assert match and match.group(1) == f"http://127.0.0.1:{DEFAULT_PORT}/healthz"
    assert str(DEFAULT_PORT) in " ".join(final.all("EXPOSE"))


def test_entrypoint_is_the_installed_console_script(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert [json.loads(e) for e in final.all("ENTRYPOINT")] == [["drkit"]]
    # drkit binds 127.0.0.1 unless told: the image's service port binds every interface
    assert [json.loads(c) for c in final.all("CMD")] == [["schedule", "run", "--bind", "0.0.0.0"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["drkit"] == "drkit.cli.entry:main"
    (script,) = entry_points(group="console_scripts", name="drkit")
    assert script.value == "drkit.cli.entry:main" and callable(script.load())
    # the final stage installs the wheel the build stage made from this project
    build = next(s for s in stages if s.name == "build")
    assert any("COPY . /src" in f"COPY {c}" for c in build.all("COPY"))
    assert any("build --wheel" in run for run in build.all("RUN"))
    assert any("--from=build" in c for c in final.all("COPY"))
    assert any(re.search(r"pip install .*\*\.whl", run) for run in final.all("RUN"))
    # and the default command exists in the CLI
    result = subprocess.run(
        [sys.executable, "-m", "drkit", "schedule", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "--port" in result.stdout


def test_postgresql_client_matches_the_build_arg_with_zstd_and_age(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    args, stages = dockerfile
    assert args["PG_MAJOR"] == "16"
    final = stages[-1]
    assert "PG_MAJOR" in final.all("ARG")
    install = " ".join(final.all("RUN"))
    assert '"postgresql-client-${PG_MAJOR}"' in install
    assert re.search(r"\bzstd\b", install) and re.search(r"\bage\b", install)
    volumes = json.loads(final.all("VOLUME")[0])
    assert "/etc/drkit/policies" in volumes and "/etc/drkit/sanitize_rules" in volumes
    assert "DRKIT_POLICY_DIR=/etc/drkit/policies" in " ".join(final.all("ENV"))


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _services(compose: dict[str, object]) -> dict[str, dict[str, object]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def test_compose_replaces_backup_with_the_drkit_scheduler(compose: dict[str, object]) -> None:
    services = _services(compose)
    assert {"db", "drkit", "prometheus"} <= set(services)
    assert "backup" not in services
    assert "postgres-backup-local" not in COMPOSE.read_text().replace(
        "(replacing the postgres-backup-local `backup` service)", ""
    )
    drkit = services["drkit"]
    assert drkit["command"][:2] == ["schedule", "run"]  # type: ignore[index]
    command = list(drkit["command"])  # type: ignore[call-overload]
    assert command[command.index("--bind") + 1] == "0.0.0.0"  # the container's port
    assert drkit["build"]["target"] == "drkit"  # type: ignore[index]
    assert drkit["stop_grace_period"] == "1h"


def test_compose_archives_wal_through_drkit(compose: dict[str, object]) -> None:
    db = _services(compose)["db"]
    command = db["command"]
    assert isinstance(command, list)
    settings = [command[i + 1] for i, c in enumerate(command) if c == "-c"]
    assert "archive_mode=on" in settings and "wal_level=replica" in settings
    assert "archive_command=drkit wal-push prod %p" in settings
    assert db["build"]["target"] == "db"  # type: ignore[index]
    prod = yaml.safe_load((ROOT / "policies" / "prod.yaml").read_text())
    assert prod["wal_archiving"] is True


def test_compose_prometheus_scrapes_drkit_with_the_rules(compose: dict[str, object]) -> None:
    prometheus = _services(compose)["prometheus"]
    assert pinned(str(prometheus["image"]), set())
    mounts = [str(v) for v in prometheus["volumes"]]  # type: ignore[attr-defined]
    assert "../monitoring/drkit-alerts.yml:/etc/prometheus/rules/drkit-alerts.yml:ro" in mounts
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "drkit"]
    # the scheduled job is the drkit_job label: Prometheus keeps its own `job` label
    assert "honor_labels" not in job
    assert job["static_configs"][0]["targets"] == [f"drkit:{DEFAULT_PORT}"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install prometheus")
    check = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_with_the_token_the_scheduler_requires(
    compose: dict[str, object],
) -> None:
    """The scheduler's port is guarded by a bearer token (--token-file), and Prometheus
    sends that very token (credentials_file on the same Docker secret): a scrape that
    carries none would get 401 and every drkit alert would fire as "metric absent"."""
    services = _services(compose)
    command = [str(arg) for arg in services["drkit"]["command"]]  # type: ignore[attr-defined]
    assert "--token-file" in command, command
    token_path = command[command.index("--token-file") + 1]
    assert token_path.startswith("/run/secrets/"), token_path
    secret = token_path.removeprefix("/run/secrets/")
    assert secret in services["drkit"]["secrets"]  # type: ignore[operator]
    assert secret in services["prometheus"]["secrets"]  # type: ignore[operator]
    assert secret in compose["secrets"]  # type: ignore[operator]
    assert f"`{secret}`" in SECRETS_README.read_text()
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "drkit"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": token_path}


def test_compose_mounts_exist_and_holds_no_password(compose: dict[str, object]) -> None:
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):  # type: ignore[attr-defined]
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        environment = service.get("environment", {})
        assert isinstance(environment, dict)
        for key, value in environment.items():
            if "PASSWORD" in key and not key.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}: {key} holds a literal secret"
            assert not re.search(r"://[^/@\s]+:[^@\s]+@", str(value)), f"{name}: {key}"


# ---------------------------------------------------------------------------
# The whole monitoring stack, and what a fresh clone needs to start it
# ---------------------------------------------------------------------------

ENV_EXAMPLE = DEPLOY / ".env.example"
SECRETS_README = DEPLOY / "secrets" / "README.md"
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {install}")
    return path


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("check-jsonschema", "pip install -e '.[test]' (package check-jsonschema)")
    return subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose` reads them."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op in (":?", "?") and (name not in env or (op == ":?" and not value)):
            raise AssertionError(f"{name} is required but deploy/.env.example does not set it")
        if op in (":-", "-") and (name not in env or (op == ":-" and not value)):
            return arg
        return value

    return VARIABLE.sub(one, text)


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the check can fail: a misspelt key is refused
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("\nservices:", "\nservice:"))
    assert check_jsonschema(broken).returncode != 0


def test_compose_starts_from_a_fresh_clone_after_copying_the_examples(tmp_path: Path) -> None:
    """Every variable the compose file needs is in .env.example, every secret file is
    described in secrets/README.md, and the file as Compose reads it is still valid."""
    example = env_example()
    rendered = tmp_path / "docker-compose.prod.yml"
    rendered.write_text(interpolate(COMPOSE.read_text(), example))
    result = check_jsonschema(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text())}
    assert used - set(example) == set(), "variables missing from deploy/.env.example"
    with pytest.raises(AssertionError, match="DRKIT_VERSION"):
        interpolate(COMPOSE.read_text(), {k: v for k, v in example.items() if k != "DRKIT_VERSION"})

    compose = yaml.safe_load(COMPOSE.read_text())
    readme = SECRETS_README.read_text()
    for name, secret in compose["secrets"].items():
        path = Path(secret["file"])
        assert path.parent == Path("secrets"), f"secret {name} outside deploy/secrets"
        assert f"`{path.name}`" in readme, f"deploy/secrets/README.md does not describe {name}"
    for name, service in _services(compose).items():
        for secret in service.get("secrets", []):  # type: ignore[attr-defined]
            assert secret in compose["secrets"], f"{name} uses an undeclared secret {secret}"
    # the examples are tracked, what they describe is not: the checkout's ignore files,
    # asked of git in a scratch repository (the tests may run from a tarball)
    git = tool("git", "apt-get install git")
    scratch = tmp_path / "clone"
    (scratch / "deploy").mkdir(parents=True)
    subprocess.run([git, "init", "-q", str(scratch)], check=True)
    for ignore in (Path(".gitignore"), Path("deploy/.gitignore")):
        if (ROOT / ignore).exists():
            (scratch / ignore).write_text((ROOT / ignore).read_text())

    def ignored(path: str) -> bool:
        check = subprocess.run([git, "check-ignore", "-q", path], cwd=scratch, check=False)
        assert check.returncode in (0, 1), f"git check-ignore {path} exited {check.returncode}"
        return check.returncode == 0

    assert not ignored("deploy/.env.example") and not ignored("deploy/secrets/README.md")
    for secret in compose["secrets"].values():
        assert ignored(f"deploy/{secret['file'].removeprefix('./')}"), secret["file"]
    assert ignored("deploy/.env")


def test_prometheus_sends_alerts_to_alertmanager(compose: dict[str, object]) -> None:
    services = _services(compose)
    alertmanager = services["alertmanager"]
    assert pinned(str(alertmanager["image"]), set())
    mounts = [str(v) for v in alertmanager["volumes"]]  # type: ignore[attr-defined]
    assert "./alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in mounts
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]  # type: ignore[operator]
    assert "monitoring" in alertmanager["networks"]  # type: ignore[operator]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"
    amtool = tool("amtool", "apt-get install prometheus-alertmanager")
    check = subprocess.run(
        [amtool, "check-config", str(DEPLOY / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # every receiver's secret file is a secret the service mounts
    am_config = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    files = re.findall(r"/run/secrets/(\w+)", json.dumps(am_config))
    assert files and set(files) <= set(alertmanager["secrets"])  # type: ignore[arg-type]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose: dict[str, object],
) -> None:
    grafana = _services(compose)["grafana"]
    assert pinned(str(grafana["image"]), set())
    mounts = dict(
        str(v).removesuffix(":ro").split(":", 1)
        for v in grafana["volumes"]  # type: ignore[attr-defined]
        if str(v).startswith(".")
    )
    assert mounts.pop("./grafana/provisioning") == "/etc/grafana/provisioning"
    ((dashboards_source, dashboards_target),) = mounts.items()
    assert (DEPLOY / dashboards_source / "drkit.json").is_file()
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/drkit.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["options"]["path"] == dashboards_target
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "monitoring" in grafana["networks"]  # type: ignore[operator]
    environment = grafana["environment"]
    assert isinstance(environment, dict)
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]  # type: ignore[operator]


# ---------------------------------------------------------------------------
# What goes into the image: the build context and the pinned Python dependencies
# ---------------------------------------------------------------------------

DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = DEPLOY / "constraints.txt"


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: from the context root, `*` and `?`
    within one path element, `**` across any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def docker_excludes(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that
    matches it or one of its parent directories decides (``!`` re-includes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _docker_pattern(line.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_the_dockerignore_matcher_can_fail() -> None:
    assert docker_excludes(".git/HEAD", [".git"])
    assert not docker_excludes("vendor/.git/HEAD", [".git"])  # root only, unlike git
    assert docker_excludes("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert not docker_excludes("deploy/.env.example", ["deploy/.env"])
    assert not docker_excludes("deploy/secrets/README.md", ["deploy/secrets", "!**/README.md"])


def test_the_build_context_leaves_out_secrets_and_caches() -> None:
    """`COPY . /src` would put deploy/.env and the secret files into an image layer."""
    lines = DOCKERIGNORE.read_text().splitlines()
    for path in (
        "deploy/.env",
        "deploy/secrets/db_password",
        "deploy/secrets/aws_credentials",
        "deploy/secrets/README.md",  # the directory whole: nothing in it is built
        ".git/HEAD",
        "__pycache__/x.pyc",
        "drkit/wal/__pycache__/push.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "tests/.pytest_cache/README.md",
        ".mypy_cache/3.11/drkit.json",
        ".ruff_cache/0.5/123",
    ):
        assert docker_excludes(path, lines), f".dockerignore lets {path} into the image"
    for path in ("pyproject.toml", "README.md", "drkit/__init__.py", "deploy/constraints.txt"):
        assert not docker_excludes(path, lines), f".dockerignore leaves out {path}"


def test_python_dependencies_are_pinned_from_pyproject_and_installed_under_them(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip())
            assert match, f"deploy/constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        names = [req.name, *(f"{req.name}-{extra}" for extra in req.extras)]
        for name in names:
            pinned_version = pins.get(canonicalize_name(name))
            assert pinned_version, f"{name} is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), text
    assert "drkit" not in pins
    # every stage that installs the wheel does so under the constraints it copied in
    _, stages = dockerfile
    installing = [
        s for s in stages if any("pip install" in r and ".whl" in r for r in s.all("RUN"))
    ]
    assert {s.name for s in installing} == {"db", "drkit"}
    for stage in installing:
        copies = [c.split() for c in stage.all("COPY")]
        (target,) = [c[-1] for c in copies if c[-2] == "deploy/constraints.txt"]
        (run,) = [r for r in stage.all("RUN") if "pip install" in r and ".whl" in r]
        assert f"--constraint {target}" in run, f"stage {stage.name}: {run}"
    # how to regenerate it is said where it is
    assert "deploy/freeze_constraints.py" in CONSTRAINTS.read_text()


def test_compose_schedules_staging_and_its_sanitize_from_prod(compose: dict[str, object]) -> None:
    drkit = _services(compose)["drkit"]
    command = list(drkit["command"])  # type: ignore[call-overload]
    envs = command[2 : command.index("--bind")]
    assert {"prod", "staging"} <= set(envs)
    staging = yaml.safe_load((ROOT / "policies" / "staging.yaml").read_text())
    assert staging["schedule"]["sanitize"]["source"] == "prod"
    mounts = [str(v) for v in drkit["volumes"]]  # type: ignore[attr-defined]
    assert "../sanitize_rules:/etc/drkit/sanitize_rules:ro" in mounts
    environment = drkit["environment"]
    assert isinstance(environment, dict)
    # the rules' salt keys the pseudonyms: a secret, so a file
    assert environment["DRKIT_SANITIZE_SALT_FILE"] == "/run/secrets/drkit_sanitize_salt"
    assert "drkit_sanitize_salt" in drkit["secrets"]  # type: ignore[operator]


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|SALT|DATABASE_URL|_KEY$|WEBHOOK", re.I)


def test_compose_takes_every_secret_from_a_file(compose: dict[str, object]) -> None:
    """A secret in an environment value shows in `docker inspect` and in every child
    process: each one is a `*_FILE` variable naming a Docker secret."""
    declared = compose["secrets"]
    assert isinstance(declared, dict)
    for name, service in _services(compose).items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict)
        mounted = {f"/run/secrets/{s}" for s in service.get("secrets", [])}  # type: ignore[attr-defined]
        for key, value in environment.items():
            if key.endswith("_FILE") or key.endswith("__FILE") or key == "PGPASSFILE":
                assert str(value) in mounted, f"{name}: {key} names {value}, not its secret"
            else:
                assert not SECRET_NAME.search(key), f"{name}: {key} is a secret in the environment"
    assert "AWS_SECRET_ACCESS_KEY" not in ENV_EXAMPLE.read_text()
