"""Failed authentications per client address, for every server that checks credentials.

A client that keeps sending bad credentials (guessing keys, or flooding with junk tokens that each
cost a lookup) is refused with 429 for the rest of the minute once it failed
AUTH_FAILURES_PER_MINUTE times, before its credentials are even looked at. Per process, in
memory: the limit bounds the work one address can cause, it needs no shared state.
"""

from __future__ import annotations

import math
import time

#: Addresses remembered at most; past it the ones whose minute is over are forgotten first.
MAX_CLIENTS = 10_000
WINDOW_SECONDS = 60.0


class FailedAuthLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def retry_after(self, client: str | None) -> int:
        """Seconds ``client`` must wait before its credentials are checked again; 0 when it may go on."""
        if client is None or client not in self._windows:
            return 0
        started, failures = self._windows[client]
        left = started + WINDOW_SECONDS - time.monotonic()
        if left <= 0:
            del self._windows[client]
            return 0
        return math.ceil(left) if failures >= self.per_minute else 0

    def failed(self, client: str | None) -> None:
        """Count one failed authentication of ``client`` (None: unknown address, not counted)."""
        if client is None:
            return
        now = time.monotonic()
        started, failures = self._windows.get(client, (now, 0))
        if now - started >= WINDOW_SECONDS:
            started, failures = now, 0
        if client not in self._windows and len(self._windows) >= MAX_CLIENTS:
            self._forget_expired(now)
        self._windows[client] = (started, failures + 1)

    def _forget_expired(self, now: float) -> None:
        expired = [c for c, (started, _) in self._windows.items() if now - started >= WINDOW_SECONDS]
        for client in expired or list(self._windows)[: MAX_CLIENTS // 10]:
            del self._windows[client]
