"""The dedup window: keys pending while their message is handled, then seen.

A key is *pending* from acceptance until its message is done; it is marked
*seen* only once every handler succeeded, and remembered ``window`` seconds
(Trio clock) in an insertion-ordered dict, oldest evicted first in O(1); at
most ``max_entries`` keys, beyond which the oldest is forgotten early. A key
released without success (dropped, dead-lettered) is not seen: routed again,
its message is handled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["DedupWindow"]


class DedupWindow:
    """Pending and seen keys of one router (owned by it; not thread-safe).

    Args:
        window (float): Seconds (Trio clock) a handled key is remembered.
        max_entries (int): Seen keys kept at most.
    """

    __slots__ = ("_max", "_pending", "_seen", "_window", "seen")

    def __init__(self, window: float, max_entries: int) -> None:
        self._window = window
        self._max = max_entries
        self._pending: set[Hashable] = set()
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self.seen = self._seen
        """Seen key -> expiry (Trio clock), oldest first (read-only for the owner)."""

    def __len__(self) -> int:
        """Keys remembered as seen now."""
        return len(self._seen)

    def is_duplicate(self, key: Hashable, now: float) -> bool:
        """True if ``key`` is pending, or was seen less than ``window`` seconds ago.

        An expired entry met here is forgotten.
        """
        if key in self._pending:
            return True
        expires = self._seen.get(key)
        if expires is None:
            return False
        if expires > now:
            return True
        del self._seen[key]
        return False

    def begin(self, key: Hashable) -> None:
        """Mark ``key`` pending (its message was accepted)."""
        self._pending.add(key)

    def release(self, key: Hashable) -> None:
        """Forget a pending ``key`` without marking it seen (dropped or dead-lettered)."""
        self._pending.discard(key)

    def done(self, key: Hashable, now: float) -> None:
        """Its message succeeded: ``key`` is seen until ``now + window``; expired keys go."""
        self._pending.discard(key)
        seen = self._seen
        seen[key] = now + self._window
        seen.move_to_end(key)
        if len(seen) > self._max:
            seen.popitem(last=False)
        while seen:
            first = next(iter(seen))
            if seen[first] > now:
                break
            del seen[first]
