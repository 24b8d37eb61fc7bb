"""``drkit archive-command``: the lines PostgreSQL runs, made to work for this install.

Above :mod:`.commands` (the lines) and :mod:`.envfile` (the variables they need): the
server's OS user must reach the policy, write a ``file://`` repository and get the
policy's variables from the env file both lines name.  Not on any path PostgreSQL runs.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.config import read_yaml
from drkit.errors import PolicyError, UsageError
from drkit.wal.commands import (
    archive_command,
    prepare_file_repository,
    reachable_by,
    restore_command,
)
from drkit.wal.documents import ArchiveCommandDocument
from drkit.wal.envfile import wal_environment, write_env_file

if TYPE_CHECKING:
    from drkit.config import Policy


def set_up_archiving(policy: Policy, policy_dir: Path, user: str | None) -> ArchiveCommandDocument:
    """``drkit archive-command``: the archive_command and restore_command lines for the
    server's OS user ``user`` (None: this one), made to work: a ``file://`` repository
    prepared for that user, the policy checked reachable by it, and the variables the
    policy needs resolved here into the env file both lines name."""
    env = policy.name
    prepare_file_repository(policy.repository.url, env, user)
    policy_file = policy_dir / f"{env}.yaml"
    if user is not None and not reachable_by(policy_file, user):
        raise UsageError(
            f"{policy_file} is not reachable by the OS user {user}, who runs archive_command: "
            "move the policies to a directory it can read (e.g. /etc/drkit/policies) "
            "and pass --policy-dir"
        )
    pinned = wal_environment(
        read_yaml(policy_file, PolicyError), policy.repository.environment_prefixes
    )
    env_file = write_env_file(env, policy_dir, pinned, user) if pinned else None
    return ArchiveCommandDocument(
        ok=True,
        environment=env,
        os_user=user or getpass.getuser(),
        archive_mode="on",
        archive_command=archive_command(env, policy_dir, user, env_file),
        restore_command=restore_command(env, policy_dir, user, env_file),
        env_file=str(env_file) if env_file else None,
        env_variables=sorted(pinned),
    )
