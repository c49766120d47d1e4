"""The monitor's per-platform state: windows, their last figures, what changed.

Part of the monitor actor's state (only the monitor task calls it). The
figures of a platform are rebuilt only when its window or its open alerts
changed, so a publish costs O(changed platforms) plus one O(platforms) copy of
the map, and an empty window costs nothing at all.
"""

from __future__ import annotations

import math

from ..config.schema import MonitorConfig
from .alerts import AlertBook
from .snapshots import PlatformStatus, platform_status
from .window import Window

__all__ = ["PlatformTable"]


class PlatformTable:
    """Windows and last-built :class:`PlatformStatus` of every known platform."""

    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.windows: dict[str, Window] = {}
        self.statuses: dict[str, PlatformStatus] = {}
        self.dirty: set[str] = set()
        """Platforms whose figures must be rebuilt at the next publish."""
        self.live: set[str] = set()
        """Platforms whose window holds something (it changes as time passes)."""
        self.next_change = math.inf
        """Trio clock seconds when the next live window loses a bucket or sample."""
        self.changed_since_eval = False
        """A window changed since the built-in rules were last evaluated."""
        self._order: list[str] = []
        self._order_stale = False
        self._unhealthy: set[str] = set()

    def window(self, pid: str) -> Window:
        """The window of ``pid``, made on first use."""
        w = self.windows.get(pid)
        if w is None:
            w = self.windows[pid] = Window(self.cfg.window, self.cfg.history_size)
            self._order_stale = True
            self.dirty.add(pid)
        return w

    def touched(self, pid: str, t: float) -> None:
        """``pid``'s window got a record at ``t`` (Trio clock)."""
        self.dirty.add(pid)
        self.changed_since_eval = True
        if pid not in self.live:
            self.live.add(pid)
            self.next_change = min(self.next_change, t + self.cfg.window)

    def forget(self, pid: str) -> bool:
        """Drop ``pid``; False if it was unknown."""
        if self.windows.pop(pid, None) is None:
            return False
        self.statuses.pop(pid, None)
        self.dirty.discard(pid)
        self.live.discard(pid)
        self._unhealthy.discard(pid)
        self._order_stale = True
        return True

    def prune(self, now: float) -> None:
        """Move the edge of every live window to ``now`` (Trio clock); O(live)."""
        if now < self.next_change:
            return
        nxt = math.inf
        gone: list[str] = []
        windows = self.windows
        for pid in self.live:
            w = windows[pid]
            if w.prune(now):
                self.dirty.add(pid)
                self.changed_since_eval = True
            if w.live:
                nxt = min(nxt, w.next_change())
            else:
                gone.append(pid)
        self.live.difference_update(gone)
        self.next_change = nxt

    def rebuild(self, alerts: AlertBook) -> bool:
        """Rebuild the figures of the platforms that changed.

        Returns:
            bool: True if any platform's figures or the set of platforms changed.
        """
        touched = alerts.touched
        alerts.touched = set()
        todo = self.dirty
        todo.update(pid for pid in touched if pid in self.windows)
        if not todo and not self._order_stale:
            return False
        cfg = self.cfg
        for pid in todo:
            w = self.windows[pid]
            n, severe = alerts.open_for(pid)
            st = platform_status(pid, w, w.figures(), cfg, n, severe)
            self.statuses[pid] = st
            if st.healthy:
                self._unhealthy.discard(pid)
            else:
                self._unhealthy.add(pid)
        self.dirty = set()
        if self._order_stale:
            self._order = sorted(self.windows)
            self._order_stale = False
        return True

    def mapping(self) -> dict[str, PlatformStatus]:
        """A new map of every platform's figures, sorted by id; O(platforms)."""
        statuses = self.statuses
        return {pid: statuses[pid] for pid in self._order}

    @property
    def healthy_count(self) -> int:
        """Platforms whose last-built figures say healthy."""
        return len(self.windows) - len(self._unhealthy)
