"""Client-side encryption of stored objects in the age format (issue: encryption).

Until the age stage lands, a policy that asks for encryption is refused before
anything is uploaded (exit 4): drkit never falls back to plaintext.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from drkit.errors import SafetyRefused


class StreamStage(Protocol):
    reader: BinaryIO

    def finish(self) -> None: ...

    def abort(self) -> None: ...


def _unavailable() -> SafetyRefused:
    return SafetyRefused(
        "repository.encryption is configured but age encryption is not implemented in this "
        "drkit version yet; refusing to store plaintext"
    )


def check_recipients(recipients: list[str]) -> None:
    raise _unavailable()


def encrypt_stream(source: BinaryIO, recipients: list[str]) -> StreamStage:
    raise _unavailable()


def decrypt_stream(source: BinaryIO, identities: list[str], *, name: str) -> StreamStage:
    raise _unavailable()
