"""Which OS user runs an account's jobs (pure): the map of the JOB_USERS setting."""

from __future__ import annotations

ROOT_NAMES = frozenset({"root"})


class JobUserSettingError(ValueError):
    """A JOB_USERS entry that is not `account:user` or names root; a JOB_UMASK that is not octal."""


def parse_user_map(entries: list[str]) -> dict[str, str]:
    """`["account:user", ...]` as {account: user}; root is never a job's user."""
    users: dict[str, str] = {}
    for entry in entries:
        account, separator, user = (part.strip() for part in entry.partition(":"))
        if not separator or not account or not user:
            raise JobUserSettingError(f"JOB_USERS entry {entry!r} is not account:user")
        if user in ROOT_NAMES:
            raise JobUserSettingError(f"JOB_USERS entry {entry!r}: jobs never run as root")
        users[account] = user
    return users


def shared_users(by_account: dict[str, str], default: str) -> dict[str, list[str]]:
    """The users that run the jobs of several accounts, with those accounts: such accounts can read
    each other's files. The default user runs every account's jobs that JOB_USERS does not map ("*")."""
    accounts: dict[str, list[str]] = {default: ["*"]}
    for account, user in sorted(by_account.items()):
        accounts.setdefault(user, []).append(account)
    return {user: names for user, names in accounts.items() if len(names) > 1 or names == ["*"]}


def parse_umask(text: str) -> int:
    """JOB_UMASK as an octal number (e.g. "077")."""
    try:
        umask = int(text, 8)
    except ValueError:
        raise JobUserSettingError(f"JOB_UMASK {text!r} is not an octal number like 077") from None
    if not 0 <= umask <= 0o777:
        raise JobUserSettingError(f"JOB_UMASK {text!r} is not between 000 and 777")
    return umask
