"""Client-side encryption of stored objects in the age format, as a streaming stage.

drkit runs the ``age`` binary (Debian package ``age``) as a subprocess between the
compressor and the upload (and between the download and the decompressor), so what
it stores is exactly what ``age -d -i key.txt`` opens, and what ``age -r age1...``
wrote is what drkit restores.  The backup host needs only the recipients (public
keys); restores, drills and ``sanitize --from-backup`` need an identity file.

A stage has three parts:

* ``reader`` — the transformed bytes.  A thread feeds the child's stdin from the
  source while the caller reads its stdout, and another drains its stderr, so no pipe
  can fill up and deadlock.  When the child's stdout ends, the reader waits for the
  child and the feeder *before* returning EOF and raises if either failed: an upload
  therefore never sees a clean end of a stream that was cut short (no truncated object
  is ever committed), and a download never hands on a partial plaintext silently.
* ``finish()`` — called after EOF: the same check, idempotent.
* ``abort()`` — kill and reap the child; idempotent, also safe after ``finish()``.

Fail closed: :func:`check_recipients` raises :class:`SafetyRefused` (exit 4) when the
``age`` binary is missing or a recipient does not parse, and :mod:`drkit.storage.repository`
calls it before anything is uploaded — drkit never falls back to plaintext.  A tampered
or undecryptable object raises :class:`CheckFailed` (exit 3) naming the object.

Secrets never leave this module: identity files are passed to age by path, age's
stderr is scrubbed of anything shaped like a secret key before it reaches a message
or a log, and recipients (public keys) are the only key material ever reported.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

from drkit.errors import CheckFailed, SafetyRefused, SubprocessError

log = logging.getLogger(__name__)

AGE_BINARY = "age"
CHUNK = 1024 * 1024
_STDERR_LINES = 20
_SECRET_RE = re.compile(r"AGE-SECRET-KEY-[0-9A-Za-z]+|AGE-PLUGIN-[0-9A-Za-z-]+")
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


class StreamStage(Protocol):
    reader: BinaryIO

    def finish(self) -> None: ...

    def abort(self) -> None: ...


# ---------------------------------------------------------------------------
# Recipients and the binary
# ---------------------------------------------------------------------------


def age_binary() -> str:
    """The ``age`` executable on PATH, or SafetyRefused (exit 4)."""
    found = shutil.which(AGE_BINARY)
    if found is None:
        raise SafetyRefused(
            "repository.encryption is configured but the age binary is not on PATH; "
            "install it (Debian/Ubuntu: apt-get install age) — nothing was stored, drkit "
            "never falls back to plaintext"
        )
    return found


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _bech32_decode(text: str) -> tuple[str, bytes] | None:
    """(hrp, payload) of a bech32 string (BIP 173, as age uses it), or None."""
    if text.lower() != text:
        return None  # age accepts lowercase only
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or any(ord(c) < 33 or ord(c) > 126 for c in text):
        return None
    hrp, data_part = text[:pos], text[pos + 1 :]
    if any(c not in _BECH32_CHARSET for c in data_part):
        return None
    data = [_BECH32_CHARSET.index(c) for c in data_part]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + data) != 1:
        return None
    acc, bits, out = 0, 0, bytearray()
    for value in data[:-6]:
        acc = (acc << 5) | value
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc << (8 - bits)) & 0xFF:
        return None  # non-zero padding
    return hrp, bytes(out)


def _is_x25519_recipient(recipient: str) -> bool:
    decoded = _bech32_decode(recipient)
    return decoded is not None and decoded[0] == "age" and len(decoded[1]) == 32


@lru_cache(maxsize=16)
def _age_accepts(binary: str, recipient: str) -> str | None:
    """Ask age itself about a non-X25519 recipient (ssh-ed25519, ssh-rsa, plugins)."""
    try:
        proc = subprocess.run(
            [binary, "--encrypt", "-r", recipient, "-o", os.devnull],
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"age could not be run: {exc.__class__.__name__}"
    if proc.returncode == 0:
        return None
    return _last_line(proc.stderr.decode("utf-8", "replace"))


def check_recipients(recipients: list[str]) -> None:
    """Fail closed (SafetyRefused, exit 4) unless age runs and every recipient parses."""
    binary = age_binary()
    if not recipients:
        raise SafetyRefused(
            "repository.encryption is configured without recipients; refusing to store plaintext"
        )
    for recipient in recipients:
        if recipient.startswith("age1") and recipient.rfind("1") == 3:
            # age1<data>: a native X25519 public key, checked here without a subprocess
            if _is_x25519_recipient(recipient):
                continue
            problem: str | None = "not a valid age X25519 public key: bad checksum or length"
        else:  # ssh-ed25519 / ssh-rsa / age1<plugin>1... keys: age itself decides
            problem = _age_accepts(binary, recipient)
        if problem:
            raise SafetyRefused(
                f"repository.encryption.recipients: {_shorten(recipient)} is not a usable "
                f"age recipient ({problem}); nothing was stored — fix the policy"
            )


def _shorten(recipient: str) -> str:
    return repr(recipient if len(recipient) <= 80 else recipient[:40] + "..." + recipient[-8:])


def _scrub(text: str) -> str:
    return _SECRET_RE.sub("[secret redacted]", text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in _scrub(text).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("age: report", "[ Did age"))]
    errors = [line for line in lines if "error" in line.lower()]
    line = (errors or lines or ["no error output"])[-1]
    return line.removeprefix("age: error: ").removeprefix("age: ")


def check_identities(identities: list[str]) -> list[str]:
    """The identity files, each checked to exist and be readable (SafetyRefused if not)."""
    if not identities:
        raise SafetyRefused(
            "this object is encrypted but no age identity is configured: set "
            "repository.encryption.identity_file (or identity_files) in the policy, or "
            "DRKIT_AGE_IDENTITY_FILE"
        )
    for path in identities:
        if not os.path.isfile(path):
            raise SafetyRefused(f"age identity file {path} does not exist (or is not a file)")
        if not os.access(path, os.R_OK):
            raise SafetyRefused(f"age identity file {path} is not readable by this user")
    return identities


# ---------------------------------------------------------------------------
# The streaming stage
# ---------------------------------------------------------------------------


class _StageReader:
    """The child's stdout; at its end, the child's and the feeder's verdict."""

    def __init__(self, stage: AgeStage) -> None:
        self._stage = stage

    def read(self, size: int = -1) -> bytes:
        stdout = self._stage.proc.stdout
        assert stdout is not None
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if size == 0:
            return b""
        try:
            data = stdout.read(size)
        except ValueError:  # closed by abort()
            data = b""
        if not data:
            self._stage.finish()
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass


class AgeStage:
    """``age`` between a source stream and :attr:`reader` (see the module docstring)."""

    def __init__(
        self, args: list[str], source: BinaryIO, *, what: str, name: str, decrypting: bool
    ) -> None:
        self.what = what
        self.name = name
        self.decrypting = decrypting
        self._source = source
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._feed_error: BaseException | None = None
        self._finished = False
        self._aborted = False
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as exc:
            raise SafetyRefused(
                f"{what} of {name}: cannot run age ({exc.strerror or exc}); install the age package"
            ) from None
        self.reader: BinaryIO = _StageReader(self)  # type: ignore[assignment]
        self._feeder = threading.Thread(target=self._feed, name=f"age-feed-{name}", daemon=True)
        self._drainer = threading.Thread(target=self._drain, name=f"age-err-{name}", daemon=True)
        self._feeder.start()
        self._drainer.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while chunk := self._source.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    written = stdin.write(view)
                    view = view[written or 0 :]
        except (BrokenPipeError, ConnectionResetError):
            pass  # age stopped reading: its exit code tells why
        except ValueError:
            if not self._aborted:
                raise
        except BaseException as exc:  # handed to the reading thread by finish()
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def _drain(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for raw in stderr:
                line = _scrub(raw.decode("utf-8", "replace")).rstrip()
                if line:
                    self._stderr.append(line)

    def finish(self) -> None:
        """Wait for age and the feeder; raise if either failed (idempotent)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._feeder.join()
            code = self.proc.wait()
            self._drainer.join(timeout=5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self._feed_error is not None:
            raise self._feed_error
        if code != 0 and not self._aborted:
            reason = _last_line("\n".join(self._stderr))
            if self.decrypting:
                raise CheckFailed(
                    f"{self.name}: cannot be decrypted ({reason}); the object is damaged or "
                    "was encrypted to keys none of the identity files hold"
                )
            raise SubprocessError(f"age encryption of {self.name} failed (exit {code}): {reason}")

    def abort(self) -> None:
        """Kill and reap age; idempotent, harmless after finish()."""
        self._aborted = True
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._feeder.join(timeout=1)
        self._drainer.join(timeout=1)
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()


def encrypt_stream(source: BinaryIO, recipients: list[str], *, name: str = "object") -> AgeStage:
    """A stage yielding ``source`` encrypted to ``recipients`` (binary age format)."""
    check_recipients(recipients)
    args = [age_binary(), "--encrypt"]
    for recipient in recipients:
        args += ["-r", recipient]
    return AgeStage(args, source, what="age encryption", name=name, decrypting=False)


def decrypt_stream(source: BinaryIO, identities: list[str], *, name: str) -> AgeStage:
    """A stage yielding ``source`` decrypted with any of the ``identities`` files."""
    binary = age_binary()
    args = [binary, "--decrypt"]
    for path in check_identities(identities):
        args += ["-i", path]
    return AgeStage(args, source, what="age decryption", name=name, decrypting=True)


def public_key_of(identity_file: str | Path) -> list[str]:
    """The recipients of the X25519 identities in a file (via ``age-keygen -y``)."""
    keygen = shutil.which("age-keygen")
    if keygen is None:
        raise SafetyRefused("age-keygen is not on PATH; install the age package")
    proc = subprocess.run(
        [keygen, "-y", str(identity_file)], capture_output=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise SafetyRefused(
            f"age-keygen -y {identity_file}: {_last_line(proc.stderr.decode('utf-8', 'replace'))}"
        )
    return [line.strip() for line in proc.stdout.decode().splitlines() if line.strip()]


__all__ = [
    "AgeStage",
    "StreamStage",
    "age_binary",
    "check_identities",
    "check_recipients",
    "decrypt_stream",
    "encrypt_stream",
    "public_key_of",
]
