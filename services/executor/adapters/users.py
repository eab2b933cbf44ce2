"""The OS users jobs run as, looked up in this node's user database."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

from services.executor.adapters.files import Owner


class UnknownJobUser(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class JobUser:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()

    @property
    def owner(self) -> Owner:
        return Owner(self.uid, self.gid, self.groups)

    @classmethod
    def named(cls, name: str) -> JobUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise UnknownJobUser(f"no user {name!r} on this node") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                   tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)))

    @classmethod
    def executors_own(cls) -> JobUser:
        """The user this executor runs as (a non-root executor cannot run jobs as anyone else)."""
        entry = pwd.getpwuid(os.geteuid())
        return cls(entry.pw_name, entry.pw_uid, os.getegid(), entry.pw_dir, tuple(os.getgroups()))


@dataclass(frozen=True, slots=True)
class JobUsers:
    """The user each account's jobs run as."""

    default: JobUser = field(default_factory=JobUser.executors_own)
    by_account: dict[str, JobUser] = field(default_factory=dict)

    def for_account(self, account: str) -> JobUser:
        return self.by_account.get(account, self.default)
