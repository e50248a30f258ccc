"""Which loaded version answers a user: live, or a canary for a sticky share of users.

A user's bucket is a hash of their id, so the same user always lands on the same side
while the canary share is unchanged (and a larger share keeps every earlier canary user)::

    bucket(user) = first 8 bytes of sha256(user_id) / 2**64      in [0, 1)
    canary if bucket(user) < share, else live
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def user_bucket(user_id: str) -> float:
    """A stable, uniform number in [0, 1) for ``user_id``."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Routing(Generic[T]):
    """An immutable routing table; the service swaps a whole one in on every change."""

    generation: int
    live: T | None
    live_name: str | None
    canary: T | None = None
    canary_name: str | None = None
    canary_share: float = 0.0
    shadow: T | None = None
    shadow_name: str | None = None

    def choose(self, user_id: str) -> tuple[str, T] | None:
        """(version name, version) that answers ``user_id``; None without a live version."""
        if self.live is None or self.live_name is None:
            return None
        if (
            self.canary is not None
            and self.canary_name is not None
            and user_bucket(user_id) < self.canary_share
        ):
            return self.canary_name, self.canary
        return self.live_name, self.live
