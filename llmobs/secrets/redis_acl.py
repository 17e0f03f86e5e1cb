"""Rotating the Redis password: the ACL user accepts the old and the new one while the services
move over, then only the new one.

``ACL SETUSER user >new`` adds a password (``CONFIG SET requirepass`` would replace it at once);
``ACL SETUSER user resetpass >new`` later drops every other one without needing the old value.
The local runtime's ``redis.conf`` follows each change, and a Redis with an ACL file saves it
(``ACL SAVE``), so a Redis restart keeps the same state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmobs.errors import LlmobsError
from llmobs.secrets.context import RotationContext, Step
from llmobs.stack.local import LocalStack
from llmobs.store.db import first_line

if TYPE_CHECKING:
    import redis

    from llmobs.config import Settings

NAME = "REDIS_PASSWORD"


def _client(settings: Settings, password: str) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a refused password is an answer here, not a hiccup (redis-py retries AUTH
    # failures with back-off by default).
    return redis.Redis(
        host=settings.redis_host,
        port=settings.get_int("REDIS_PORT"),
        username=settings.get_str("REDIS_USER"),
        password=password,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def accepts(settings: Settings, password: str) -> bool:
    """Whether Redis lets REDIS_USER in with ``password``; LlmobsError when it cannot be reached."""
    import redis

    client = _client(settings, password)
    try:
        client.ping()
        return True
    except redis.AuthenticationError:
        return False
    except redis.RedisError as exc:
        raise LlmobsError(
            f"cannot reach Redis at {settings.redis_host}:{settings.get_int('REDIS_PORT')}: {first_line(exc)}",
            hint="is the stack up? (`llmobs status`)",
        ) from None
    finally:
        client.close()


def _admin(ctx: RotationContext) -> redis.Redis:
    """A client logged in with whichever of the passwords in play Redis takes (a Redis restart
    in the middle of a rotation rewrites its configuration from ``.env`` alone)."""
    settings = ctx.settings()
    for password in (settings.secret(NAME), ctx.store.staged(NAME), ctx.store.retired(NAME)):
        if password and accepts(settings, password):
            return _client(settings, password)
    raise LlmobsError(
        "Redis refuses REDIS_PASSWORD (and the staged and previous values)",
        hint="set REDIS_PASSWORD in .env to the ACL user's password, then run the rotation again",
    )


def _persist(ctx: RotationContext, passwords: list[str]) -> None:
    """Keep the local runtime's redis.conf in step with the live ACL (compose: the container
    writes its configuration from the secret at start)."""

    stack = ctx.stack()
    if isinstance(stack, LocalStack):
        stack.write_redis_config(passwords)


def _set_user(ctx: RotationContext, user: str, *rules: str) -> None:
    """``ACL SETUSER`` with ``rules``. Redis quotes a rule it rejects in its error, so the error
    is reported without Redis' message (a rule may hold a password)."""
    import redis

    client = _admin(ctx)
    try:
        client.execute_command("ACL", "SETUSER", user, *rules)
        # A Redis that keeps its users in an ACL file must write the change there, or its next
        # start would bring the old passwords back.
        if client.config_get("aclfile").get("aclfile"):
            client.execute_command("ACL", "SAVE")
    except redis.RedisError as exc:
        raise LlmobsError(
            f"Redis refused to change the passwords of {user} ({type(exc).__name__})",
            hint="check that REDIS_USER names the ACL user of the stack",
        ) from None
    finally:
        client.close()


def add_new_password(ctx: RotationContext) -> None:
    new = ctx.store.staged(NAME)
    if new is None:
        return
    old = ctx.store.current(NAME)
    user = ctx.settings().get_str("REDIS_USER")
    _set_user(ctx, user, f">{new}")
    _persist(ctx, [p for p in (old, new) if p])
    ctx.progress.done(f"Redis user {user} accepts the old and the new password")


def ensure_in_use_accepted(ctx: RotationContext) -> None:
    """Before services restart with the password in ``.env``: make sure Redis takes it."""
    settings = ctx.settings()
    if not accepts(settings, settings.secret(NAME)):
        _set_user(ctx, settings.get_str("REDIS_USER"), f">{settings.secret(NAME)}")
        ctx.progress.done("Redis had lost the new password (restarted?): added again")


def commit(ctx: RotationContext) -> None:
    if ctx.swap(NAME):
        ctx.progress.done(f"{NAME} updated in .env")


def remove_old_password(ctx: RotationContext) -> None:
    settings = ctx.settings()
    new, user = settings.secret(NAME), settings.get_str("REDIS_USER")
    _set_user(ctx, user, "resetpass", f">{new}")
    _persist(ctx, [new])
    ctx.progress.done(f"Redis user {user} accepts only the new password")


def steps() -> list[Step]:
    return [
        Step("redis.add", "Adding the new Redis password", add_new_password),
        Step("redis.commit", f"Writing {NAME}", commit),
    ]


def after_restart_steps() -> list[Step]:
    return [Step("redis.revoke", "Removing the old Redis password", remove_old_password)]


def verify(ctx: RotationContext) -> None:
    settings = ctx.settings()
    if not accepts(settings, settings.secret(NAME)):
        raise LlmobsError(f"Redis refuses the new {NAME}", hint="run the rotation again; it resumes where it stopped")
    old = ctx.store.retired(NAME)
    if old and accepts(settings, old):
        raise LlmobsError(f"Redis still accepts the old {NAME}", hint="run the rotation again")
    ctx.check(
        f"Redis: {settings.get_str('REDIS_USER')} logs in with the new password"
        + ("; the old one is refused" if old else "")
    )
