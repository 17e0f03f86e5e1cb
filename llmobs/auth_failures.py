"""Failed authentications per client address, for every server that checks credentials.

A client that keeps sending bad credentials (guessing keys, or flooding with junk tokens that each
cost a lookup) is refused with 429 for the rest of the minute once it failed
AUTH_FAILURES_PER_MINUTE times, before its credentials are looked up. Per process, in memory: the
limit bounds the work one address can cause, it needs no shared state.

Clients behind one address (a NAT, a proxy) share its limit, so a limited address still gets its
requests served when they carry credentials this process accepted in the last KNOWN_GOOD_SECONDS:
those are checked as usual (a revoked key is refused, and forgotten). Anything else from a limited
address is refused without a lookup, so guessing gains nothing: a guess passes only if it equals a
key a client already used here (a 190-bit secret, see ``key_format``), and checking that costs a
hash, not a query.
"""

from __future__ import annotations

import math
import time

from llmobs.key_format import hash_token  # never the credentials in clear

#: Addresses remembered at most; past it the ones whose minute is over are forgotten first.
MAX_CLIENTS = 10_000
WINDOW_SECONDS = 60.0
#: Credentials accepted here stay known this long after their last success, at most MAX_KNOWN of them.
KNOWN_GOOD_SECONDS = 3600.0
MAX_KNOWN = 10_000


class FailedAuthLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)
        self._known: dict[str, float] = {}  # sha256 of accepted credentials -> last success

    def retry_after(self, client: str | None, token: str) -> int:
        """Seconds ``client`` must wait before ``token`` is looked up; 0 when it may go on: the
        address is under its limit, or ``token`` is credentials this process accepted lately."""
        if client is None or client not in self._windows:
            return 0
        started, failures = self._windows[client]
        left = started + WINDOW_SECONDS - time.monotonic()
        if left <= 0:
            del self._windows[client]
            return 0
        if failures < self.per_minute or self._is_known(token):
            return 0
        return math.ceil(left)

    def succeeded(self, token: str) -> None:
        """Remember ``token`` as credentials that checked out (served even from a limited address)."""
        now = time.monotonic()
        digest = hash_token(token)
        if digest not in self._known and len(self._known) >= MAX_KNOWN:
            self._known = {d: t for d, t in self._known.items() if now - t < KNOWN_GOOD_SECONDS}
            if len(self._known) >= MAX_KNOWN:  # all recent: drop the oldest tenth
                for old in sorted(self._known, key=self._known.__getitem__)[: MAX_KNOWN // 10]:
                    del self._known[old]
        self._known[digest] = now

    def failed(self, client: str | None, token: str) -> None:
        """Count one failed authentication of ``client`` (None: unknown address, not counted) and
        forget ``token`` if it was known good (a key revoked since)."""
        self._known.pop(hash_token(token), None)
        if client is None:
            return
        now = time.monotonic()
        started, failures = self._windows.get(client, (now, 0))
        if now - started >= WINDOW_SECONDS:
            started, failures = now, 0
        if client not in self._windows and len(self._windows) >= MAX_CLIENTS:
            self._forget_expired(now)
        self._windows[client] = (started, failures + 1)

    def _is_known(self, token: str) -> bool:
        seen = self._known.get(hash_token(token))
        return seen is not None and time.monotonic() - seen < KNOWN_GOOD_SECONDS

    def _forget_expired(self, now: float) -> None:
        expired = [c for c, (started, _) in self._windows.items() if now - started >= WINDOW_SECONDS]
        for client in expired or list(self._windows)[: MAX_CLIENTS // 10]:
            del self._windows[client]
