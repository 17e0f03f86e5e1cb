"""One log line per refused request, rate-limited: what an operator needs to find a misconfigured
client (reason, transport, remote address, API key id), never the key itself.

A client retrying a refused request in a loop must not flood the log: per reason and transport,
the first refusal of each :data:`WINDOW_SECONDS` is logged, and the next logged line says how many
were left out in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from llmobs.store.apikeys import key_id_of

log = logging.getLogger("llmobs.collector.refused")

WINDOW_SECONDS = 10.0


def key_id_in(token: str | None) -> str | None:
    """The key id a bearer token names (``llmobs_<id>_<secret>``); None for anything else. Only
    the id, which is not secret, ever reaches a log."""
    return key_id_of(token) if token else None


class RefusalLog:
    """Logs refused requests, at most one line per (reason, transport) per window."""

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        #: (reason, transport) -> (window start, refusals left out since the last line)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def refused(
        self, *, reason: str, status: int, transport: str, remote: str | None, key_id: str | None, message: str
    ) -> bool:
        """Record one refusal; log it unless its (reason, transport) was logged within the window.
        Returns whether a line was written."""
        now = self._clock()
        with self._lock:
            start, left_out = self._seen.get((reason, transport), (None, 0))
            if start is not None and now - start < self._window:
                self._seen[reason, transport] = (start, left_out + 1)
                return False
            self._seen[reason, transport] = (now, 0)
        log.warning(
            "refused %s request: %s (%d) from %s, key %s: %s%s",
            transport,
            reason,
            status,
            remote or "unknown address",
            key_id or "none",
            message,
            f" ({left_out} more like it in the last {self._window:g} s not logged)" if left_out else "",
        )
        return True
