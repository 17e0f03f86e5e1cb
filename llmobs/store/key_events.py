"""Changes of API keys announced by PostgreSQL, for the key caches of the api and the collector.

Both cache what an API key lookup answered, so that not every request costs a query. Without
more, a revoked key would keep working until its cached answer expired. A trigger
(``init-sql/0023``) sends ``NOTIFY llmobs_api_keys`` with the key's id and hash whenever a key
is revoked, expires, changes role or project, or is deleted; :func:`follow_key_changes` listens
on its own connection and tells the cache to forget that key.

Notifications sent while the listener is disconnected are lost, so after every (re)connection
the cache is cleared as a whole: the next request of each key asks the database again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "llmobs_api_keys"
#: seconds between attempts to connect again
RETRY_SECONDS = 2.0


async def follow_key_changes(
    connect_kwargs: dict[str, Any],
    forget: Callable[[str, str], None],
    forget_all: Callable[[], None],
    *,
    retry_seconds: float = RETRY_SECONDS,
) -> None:
    """Call ``forget(key_id, key_hash)`` for every announced change, and ``forget_all()`` each
    time listening starts (again). Runs until cancelled; a lost connection is opened again."""
    import psycopg

    kwargs = {**connect_kwargs, "application_name": f"{connect_kwargs.get('application_name', 'llmobs')}-keys"}
    lost = False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(**kwargs, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                forget_all()
                if lost:
                    log.info("listening to API key changes again; key cache cleared")
                lost = False
                async for note in conn.notifies():
                    _announce(note.payload, forget)
        except psycopg.Error as exc:
            if not lost:
                log.warning(
                    "not listening to API key changes (%s): a revoked key stays accepted until its "
                    "cached answer expires; retrying every %.0f s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    retry_seconds,
                )
            lost = True
        await asyncio.sleep(retry_seconds)


def _announce(payload: str, forget: Callable[[str, str], None]) -> None:
    try:
        change = json.loads(payload)
        key_id, key_hash = str(change["id"]), str(change["key_hash"])
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed notification on %s", CHANNEL)
        return
    forget(key_id, key_hash)
