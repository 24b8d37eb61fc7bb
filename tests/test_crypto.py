"""age encryption: interop with the age CLI both ways, fail-closed, rotation, tampering.

Everything runs the real ``drkit`` CLI against a real PostgreSQL and a real repository
(a directory or an S3 server over HTTP), and opens what drkit stored with the real
``age`` binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drkit.demo.sample import table_counts
from tests.builders import encryption
from tests.fix_cli import (
    AGE,
    AGE_KEYGEN,
    SECRET_MARK,
    AgeKey,
    DrkitRunner,
    KeyMaker,
    PolicyWriter,
    age_decrypt,
)
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import RepoView

if AGE is None or AGE_KEYGEN is None:  # fail, never skip: CI must install it
    raise RuntimeError("the encryption tests need the age CLI: apt-get install age")


def store_for(repo: RepoTarget, request: pytest.FixtureRequest) -> RepoView:
    s3 = request.getfixturevalue("s3_server") if repo.kind == "s3" else None
    return RepoView(repo, s3)


def pg_restore_list(dump: bytes) -> str:
    proc = subprocess.run(["pg_restore", "--list"], input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def assert_no_secret(text: str, *keys: AgeKey) -> None:
    assert SECRET_MARK not in text
    for key in keys:
        assert key.secret() not in text


def manifest_of(store: RepoView, backup_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(store.get(f"prod/backups/{backup_id}/manifest.json"))
    return doc


# ---------------------------------------------------------------------------
# Interoperability
# ---------------------------------------------------------------------------


def test_age_cli_opens_what_drkit_stored_and_drkit_restores_it(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
    request: pytest.FixtureRequest,
) -> None:
    import zstandard

    dbname, url = sample_db
    key = age_key("prod")
    store = store_for(repo_target, request)
    policy_dir = make_policy("prod", url, repo_target, repository=encryption([key], [key]))

    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    backup_id = made.json()["id"]
    dump_key = f"prod/backups/{backup_id}/{dbname}.dump.zst.age"
    assert set(store.objects()) == {dump_key, f"prod/backups/{backup_id}/manifest.json"}

    stored = store.get(dump_key)
    assert stored.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert b"PGDMP" not in stored and b"sentrikat" not in stored.lower()
    # the age CLI opens it; what comes out is a zstd-compressed pg_dump archive
    dump = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(age_decrypt(stored, key))).read()
    assert dump.startswith(b"PGDMP")
    listing = pg_restore_list(dump)
    assert "TABLE DATA public vulnerability" in listing

    manifest = manifest_of(store, backup_id)
    (obj,) = manifest["objects"]
    assert obj["encryption_recipients"] == [key.recipient]
    assert obj["sha256"] == hashlib.sha256(stored).hexdigest()
    assert obj["stored_size"] == len(stored)
    assert obj["raw_size"] == len(dump)
    assert_no_secret(json.dumps(manifest) + made.stdout + made.stderr, key)

    verified = run_cli("verify", "prod", "latest", "--json", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr
    assert verified.json()["ok"] is True

    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", backup_id, "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 0, restored.stderr
    assert table_counts(pg_server.dsn(target)) == table_counts(pg_server.dsn(dbname))
    assert_no_secret(restored.stdout + restored.stderr + verified.stdout, key)
    pg_server.drop_database(target)


def test_uncompressed_object_pipes_from_age_straight_into_pg_restore(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    dbname, url = sample_db
    key = age_key("prod")
    repository = {**encryption([key]), "compression": {"algorithm": "none"}}
    policy_dir = make_policy("prod", url, file_repo, repository=repository)
    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    assert file_repo.root is not None
    path = file_repo.root / "prod" / "backups" / made.json()["id"] / f"{dbname}.dump.age"
    # the shell pipeline an operator would type: age -d -i key FILE | pg_restore --list
    age = subprocess.Popen(
        [str(AGE), "-d", "-i", str(key.identity), str(path)], stdout=subprocess.PIPE
    )
    listing = subprocess.run(
        ["pg_restore", "--list"], stdin=age.stdout, capture_output=True, text=True, check=False
    )
    assert age.stdout is not None
    age.stdout.close()
    # pg_restore --list stops reading after the table of contents: age may get SIGPIPE
    assert age.wait() in (0, -13) and listing.returncode == 0, listing.stderr
    assert "TABLE DATA public user" in listing.stdout


def test_drkit_restores_an_object_the_age_cli_encrypted(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    """Replace drkit's ciphertext by the age CLI's own (armored, two recipients)."""
    dbname, url = sample_db
    key, other = age_key("prod"), age_key("other")
    policy_dir = make_policy("prod", url, file_repo, repository=encryption([key], [key]))
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    assert file_repo.root is not None
    folder = file_repo.root / "prod" / "backups" / backup_id
    path = folder / f"{dbname}.dump.zst.age"
    plain = age_decrypt(path.read_bytes(), key)
    foreign = subprocess.run(
        [str(AGE), "--armor", "-r", other.recipient, "-r", key.recipient],
        input=plain,
        capture_output=True,
        check=True,
    ).stdout
    assert foreign.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    path.write_bytes(foreign)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["objects"][0].update(
        sha256=hashlib.sha256(foreign).hexdigest(), stored_size=len(foreign)
    )
    (folder / "manifest.json").write_text(json.dumps(manifest))

    assert run_cli("verify", "prod", backup_id, policy_dir=policy_dir).code == 0
    target = f"a_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", backup_id, "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 0, restored.stderr
    assert table_counts(pg_server.dsn(target)) == table_counts(pg_server.dsn(dbname))
    pg_server.drop_database(target)


# ---------------------------------------------------------------------------
# Fail closed
# ---------------------------------------------------------------------------


def test_age_missing_refuses_before_anything_is_uploaded(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    _dbname, url = sample_db
    key = age_key("prod")
    store = store_for(repo_target, request)
    policy_dir = make_policy("prod", url, repo_target, repository=encryption([key]))
    no_age = tmp_path / "bin-without-age"
    no_age.mkdir()
    env = {"PATH": str(no_age)}

    result = run_cli("backup", "prod", policy_dir=policy_dir, env=env)
    assert result.code == 4, result.stderr
    assert "age" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert store.objects() == {}

    wal = tmp_path / "pg_wal" / "000000010000000000000001"
    wal.parent.mkdir()
    wal.write_bytes(os.urandom(64 * 1024))
    pushed = run_cli("wal-push", "prod", str(wal), policy_dir=policy_dir, env=env)
    assert pushed.code == 4, pushed.stderr
    assert store.objects() == {}

    # the same policy with age on PATH works: the refusal was about age, not the policy
    assert run_cli("backup", "prod", policy_dir=policy_dir).code == 0
    assert all(k.endswith((".age", "manifest.json")) for k in store.objects())


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        pytest.param(lambda r: r[:-1] + ("q" if r[-1] != "q" else "p"), 4, id="bad-checksum"),
        pytest.param(lambda r: r[:20], 4, id="truncated"),
        pytest.param(lambda r: r[:30] + "b" + r[31:], 4, id="not-bech32"),
        pytest.param(lambda r: "ssh-ed25519 AAAAnot-a-key", 4, id="bad-ssh-key"),
        # the policy loader already rejects what does not even start with age1/ssh-: exit 2
        pytest.param(lambda r: r.upper(), 2, id="uppercase"),
    ],
)
def test_unparsable_recipient_refuses_before_anything_is_uploaded(
    mangle: Callable[[str], str],
    code: int,
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    _dbname, url = sample_db
    good = age_key("good")
    bad = mangle(good.recipient)
    repository = {"encryption": {"recipients": [good.recipient, bad]}}
    policy_dir = make_policy("prod", url, file_repo, repository=repository)
    result = run_cli("backup", "prod", policy_dir=policy_dir)
    assert result.code == code, result.stderr
    assert "recipient" in result.stderr and "Traceback" not in result.stderr
    assert file_repo.root is not None
    assert not [p for p in file_repo.root.rglob("*") if p.is_file()]


def test_ssh_ed25519_recipient_is_accepted(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    tmp_path: Path,
) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.fail("this test needs ssh-keygen: apt-get install openssh-client")
    dbname, url = sample_db
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    recipient = (tmp_path / "id_ed25519.pub").read_text().strip()
    repository = {"encryption": {"recipients": [recipient], "identity_file": str(key)}}
    policy_dir = make_policy("prod", url, file_repo, repository=repository)
    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    assert run_cli("verify", "prod", "latest", policy_dir=policy_dir).code == 0
    assert file_repo.root is not None
    (path,) = file_repo.root.rglob(f"{dbname}.dump.zst.age")
    assert b"-> ssh-ed25519 " in path.read_bytes()[:200]


def test_restore_without_an_identity_is_refused(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
    tmp_path: Path,
) -> None:
    _dbname, url = sample_db
    key = age_key("prod")
    policy_dir = make_policy("prod", url, file_repo, repository=encryption([key]))
    assert run_cli("backup", "prod", policy_dir=policy_dir).code == 0
    target = f"n_{uuid.uuid4().hex[:8]}"
    env = {"DRKIT_AGE_IDENTITY_FILE": ""}
    refused = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir, env=env
    )
    assert refused.code == 4, refused.stderr
    assert "identity" in refused.stderr and "DRKIT_AGE_IDENTITY_FILE" in refused.stderr

    missing = tmp_path / "nowhere.txt"
    env = {"DRKIT_AGE_IDENTITY_FILE": str(missing)}
    refused = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir, env=env
    )
    assert refused.code == 4 and str(missing) in refused.stderr, refused.stderr

    # the identity through the environment variable is enough
    env = {"DRKIT_AGE_IDENTITY_FILE": str(key.identity)}
    done = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir, env=env
    )
    assert done.code == 0, done.stderr
    assert_no_secret(done.stdout + done.stderr + refused.stderr, key)
    pg_server.drop_database(target)


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------


def test_key_rotation_keeps_old_backups_restorable(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    dbname, url = sample_db
    old, new = age_key("2025"), age_key("2026")
    policy_dir = make_policy("prod", url, file_repo, repository=encryption([old], [old]))
    first = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    pg_server.query(dbname, "DELETE FROM alert_log")
    counts_after = table_counts(pg_server.dsn(dbname))

    # rotate: new objects go to the new key only; both identities are available to restores
    make_policy("prod", url, file_repo, repository=encryption([new], [new, old]))
    second = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    assert file_repo.root is not None
    store = RepoView(file_repo, None)
    assert manifest_of(store, first)["objects"][0]["encryption_recipients"] == [old.recipient]
    assert manifest_of(store, second)["objects"][0]["encryption_recipients"] == [new.recipient]
    second_obj = f"prod/backups/{second}/{dbname}.dump.zst.age"
    assert b"-> X25519 " in store.get(second_obj)[:200]
    # the new object really is only for the new key
    fails = subprocess.run(
        [str(AGE), "-d", "-i", str(old.identity)],
        input=store.get(second_obj),
        capture_output=True,
        check=False,
    )
    assert fails.returncode != 0

    verified = run_cli("verify", "prod", "--all", "--json", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr
    for backup_id, expected_alerts in ((first, None), (second, 0)):
        target = f"k_{uuid.uuid4().hex[:8]}"
        restored = run_cli(
            "restore",
            "prod",
            backup_id,
            "--target-db",
            pg_server.url(target),
            policy_dir=policy_dir,
        )
        assert restored.code == 0, restored.stderr
        counts = table_counts(pg_server.dsn(target))
        if expected_alerts is not None:
            assert counts == counts_after
        else:
            assert counts["public.alert_log"] > 0
        pg_server.drop_database(target)

    # with only the new identity, the old backup cannot be opened: exit 3 naming the object
    make_policy("prod", url, file_repo, repository=encryption([new], [new]))
    verified = run_cli("verify", "prod", first, policy_dir=policy_dir)
    assert verified.code == 3, verified.stderr
    assert f"{first}/{dbname}.dump.zst.age" in verified.stderr
    assert "no identity matched" in verified.stderr


# ---------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------


def _tamper_and_check(
    where: str,
    dbname: str,
    url: str,
    repo: RepoTarget,
    store: RepoView,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    key: AgeKey,
) -> None:
    policy_dir = make_policy("prod", url, repo, repository=encryption([key], [key]))
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    dump_key = f"prod/backups/{backup_id}/{dbname}.dump.zst.age"
    data = bytearray(store.get(dump_key))
    offset = len(data) // 2 if where == "payload" else data.index(b"\n") + 20
    data[offset] ^= 0x01
    store.put(dump_key, bytes(data))

    verified = run_cli("verify", "prod", "--all", policy_dir=policy_dir)
    assert verified.code == 3, verified.stderr
    assert dump_key in verified.stderr
    assert "Traceback" not in verified.stderr

    target = f"t_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 3, restored.stderr
    assert dump_key in restored.stderr
    assert pg_server.query(target, "SELECT count(*) FROM pg_tables WHERE schemaname='public'") == [
        (0,)
    ]
    assert_no_secret(verified.stderr + restored.stderr, key)
    pg_server.drop_database(target)


def test_flipped_payload_byte_fails_verify_and_restore_naming_the_object(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
    request: pytest.FixtureRequest,
) -> None:
    dbname, url = sample_db
    store = store_for(repo_target, request)
    _tamper_and_check(
        "payload",
        dbname,
        url,
        repo_target,
        store,
        make_policy,
        pg_server,
        run_cli,
        age_key("prod"),
    )


def test_flipped_header_byte_fails_verify_and_restore_naming_the_object(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    dbname, url = sample_db
    _tamper_and_check(
        "header",
        dbname,
        url,
        file_repo,
        RepoView(file_repo, None),
        make_policy,
        pg_server,
        run_cli,
        age_key("prod"),
    )


# ---------------------------------------------------------------------------
# The stage itself (real age subprocesses, no server)
# ---------------------------------------------------------------------------


class _Exploding:
    """A source that yields some bytes and then fails, like a pg_dump that died."""

    def __init__(self, good: int) -> None:
        self._left = good

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise OSError("source died half-way")
        n = min(self._left, size if size > 0 else self._left)
        self._left -= n
        return b"x" * n


def test_stage_streams_large_data_both_ways_without_deadlock(age_key: KeyMaker) -> None:
    from drkit import crypto

    key = age_key("k")
    data = os.urandom(1 << 20) * 24  # 24 MiB: far beyond any pipe buffer
    enc = crypto.encrypt_stream(io.BytesIO(data), [key.recipient], name="big")
    sink = hashlib.sha256()
    encrypted = bytearray()
    while chunk := enc.reader.read(65536):  # small reads: the feeder must block, not deadlock
        encrypted += chunk
    enc.finish()
    enc.abort()
    assert enc.proc.returncode == 0
    dec = crypto.decrypt_stream(io.BytesIO(bytes(encrypted)), [str(key.identity)], name="big")
    while chunk := dec.reader.read(1 << 20):
        sink.update(chunk)
    dec.finish()
    assert sink.hexdigest() == hashlib.sha256(data).hexdigest()


def test_failed_source_never_commits_an_object(tmp_path: Path, age_key: KeyMaker) -> None:
    from drkit import crypto
    from drkit.storage import FileBackend

    key = age_key("k")
    backend = FileBackend(tmp_path / "repo")
    stage = crypto.encrypt_stream(_Exploding(5 << 20), [key.recipient], name="obj")
    with pytest.raises(Exception, match="source died"):
        backend.put_stream("env/obj.age", stage.reader)
    stage.abort()
    assert stage.proc.poll() is not None  # reaped
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]


def test_truncated_ciphertext_is_a_check_failure(age_key: KeyMaker) -> None:
    from drkit import crypto
    from drkit.errors import CheckFailed

    key = age_key("k")
    enc = crypto.encrypt_stream(io.BytesIO(b"y" * 300_000), [key.recipient], name="t")
    encrypted = enc.reader.read()
    enc.finish()
    for cut in (len(encrypted) - 1, len(encrypted) // 2, 40):
        dec = crypto.decrypt_stream(
            io.BytesIO(encrypted[:cut]), [str(key.identity)], name="env/wal/X.age"
        )
        with pytest.raises(CheckFailed, match=r"env/wal/X\.age: cannot be decrypted"):
            dec.reader.read()
        dec.abort()
        dec.abort()  # idempotent


def test_secret_keys_are_scrubbed_from_age_errors(tmp_path: Path) -> None:
    from drkit import crypto
    from drkit.errors import DrkitError

    # an identity file age rejects, holding something shaped like a secret key
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n")
    dec = crypto.decrypt_stream(io.BytesIO(b"age-encryption.org/v1\n"), [str(bad)], name="o")
    with pytest.raises(DrkitError) as caught:
        dec.reader.read()
    dec.abort()
    assert SECRET_MARK not in str(caught.value)
    assert "o: cannot be decrypted" in str(caught.value)


def test_python_recipient_check_agrees_with_age(age_key: KeyMaker) -> None:
    """drkit's bech32 check and the age binary accept and reject the same keys."""
    from drkit import crypto

    good = age_key("k").recipient
    candidates = [good, good[:-1] + "x", good[:-2], good + "q", good.replace("age1", "age2", 1)]
    for i in range(5, len(good), 7):
        candidates.append(good[:i] + ("p" if good[i] != "p" else "q") + good[i + 1 :])
    for recipient in candidates:
        ours = recipient.startswith("age1") and crypto._is_x25519_recipient(recipient)
        theirs = (
            subprocess.run(
                [str(AGE), "-r", recipient, "-o", os.devnull],
                input=b"",
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        assert ours == theirs, recipient


def test_a_drill_restores_an_encrypted_backup_and_needs_the_identity(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
) -> None:
    import tempfile

    _dbname, url = sample_db
    key = age_key("prod")
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        repository=encryption([key], [key]),
        objectives={"rpo": "1h", "rto": "30m"},
    )
    assert run_cli("backup", "prod", policy_dir=policy_dir).code == 0
    scratch = Path(tempfile.mkdtemp(prefix="drkit-test-crypto-drill-"))
    scratch.chmod(0o755)
    try:
        env = {"DRKIT_TMPDIR": str(scratch)}
        done = run_cli("drill", "prod", "--json", policy_dir=policy_dir, env=env, timeout=600)
        assert done.code == 0, done.stderr
        assert done.json()["verdict"] == "PASS"
        assert_no_secret(done.stdout + done.stderr, key)

        make_policy(
            "prod",
            url,
            file_repo,
            repository=encryption([key]),
            objectives={"rpo": "1h", "rto": "30m"},
        )
        refused = run_cli(
            "drill",
            "prod",
            "--json",
            policy_dir=policy_dir,
            env={**env, "DRKIT_AGE_IDENTITY_FILE": ""},
            timeout=600,
        )
        # the drill runs, its restore errors naming what is missing, and it never passes
        assert refused.code in (1, 3, 4), refused.stderr
        assert json.loads(refused.stdout)["verdict"] != "PASS"
        assert "DRKIT_AGE_IDENTITY_FILE" in refused.stderr
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_a_base_backup_needs_only_the_recipients(age_key: KeyMaker, run_cli: DrkitRunner) -> None:
    """The backup host never needs the private key (only the recipients).  A base backup learns
    its stop point from pg_basebackup's own backup_manifest, not by decrypting the
    ``.backup`` history file it archived; with the identity, the stop point recorded is
    the one that file names."""
    import re

    from tests.wal_support import file_repo_block, shared_dir, start_archived_cluster

    key = age_key("prod")
    with shared_dir() as root:
        url = file_repo_block(root)["url"]
        arch = start_archived_cluster(root, {"url": url, **encryption([key])})
        try:
            arch.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
            taken = run_cli(
                "backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir, timeout=600
            )
            assert taken.code == 0, taken.stderr
            assert_no_secret(taken.stdout + taken.stderr, key)
            backup_id = taken.json()["id"]
            manifests = list(root.rglob(f"{backup_id}/manifest.json"))
            assert len(manifests) == 1
            manifest = json.loads(manifests[0].read_text())
            history = manifest["extra"]["backup_history_file"]
            stored = list((root / "repo" / "prod" / "wal").glob(f"{history}*"))
            assert len(stored) == 1 and stored[0].name.endswith(".age"), stored
            text = age_decrypt(stored[0].read_bytes(), key)
            if stored[0].name.endswith(".zst.age"):
                import zstandard

                text = zstandard.ZstdDecompressor().decompressobj().decompress(text)
            stop = re.search(rb"STOP WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", text)
            assert stop is not None and manifest["wal_stop"] == stop.group(1).decode()
        finally:
            arch.stop_restored()
            arch.cluster.destroy()
