"""Rotating the database passwords: superuser, readonly, and the app role without a gap.

The app's credentials move over two login roles (``llmobs_app_a`` / ``llmobs_app_b``, both members
of ``llmobs_app``): the idle one gets the new password and LOGIN, the services move to it by a
rolling restart, and only once they are connected as it is the old one closed (NOLOGIN, no
password, leftover sessions ended). Every connection attempt in between succeeds.

The superuser and readonly roles cannot overlap (one role, one password): ``ALTER ROLE`` with a
SCRAM verifier computed here (the clear password never reaches the server or its log), then
``.env`` at once. Only this command and operators' tools log in as them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmobs.errors import ConfigError, LlmobsError
from llmobs.secrets.context import RotationContext, Step
from llmobs.store.bootstrap import set_role_password
from llmobs.store.db import APP_GROUP_ROLE, APP_LOGIN_ROLES, READONLY_ROLE, SUPERUSER, connect_kwargs, first_line

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

#: How long the services get to connect as the new app role, and to drop the old one's sessions.
MOVE_TIMEOUT_S = 30.0
_APP_SERVICES = ("api", "collector")


def other_app_role(current: str) -> str:
    if current not in APP_LOGIN_ROLES:
        raise ConfigError("DB_APP_USER", f"{current!r} is not one of: {', '.join(APP_LOGIN_ROLES)}")
    return APP_LOGIN_ROLES[1 - APP_LOGIN_ROLES.index(current)]


def login(settings: Settings, user: str, password: str, *, dbname: str | None = None) -> psycopg.Connection | None:
    """A connection as ``user``; None when the server refuses the credentials. Unreachable
    servers raise LlmobsError (never with the password: it travels as a keyword argument)."""
    import psycopg

    kwargs = connect_kwargs(settings, "admin", dbname=dbname)
    kwargs.update(user=user, password=password, application_name="llmobs-secrets")
    try:
        return psycopg.connect(autocommit=True, **kwargs)
    except psycopg.OperationalError as exc:
        if _refused(exc):
            return None
        raise LlmobsError(
            f"cannot connect to PostgreSQL at {kwargs['host']}:{kwargs['port']}: {first_line(exc)}",
            hint="is the stack up? (`llmobs status`)",
        ) from None


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in ("password authentication failed", "is not permitted to log in"))


def admin_connection(ctx: RotationContext) -> psycopg.Connection:
    """The superuser, with the password in use or, after a crash between ``ALTER ROLE`` and the
    ``.env`` update, the staged one."""
    settings = ctx.settings()
    for password in (settings.secret("DB_PASSWORD"), ctx.store.staged("DB_PASSWORD")):
        if password:
            conn = login(settings, SUPERUSER, password)
            if conn is not None:
                return conn
    raise LlmobsError(
        "PostgreSQL refuses DB_PASSWORD (and the staged new value) for the superuser",
        hint="set DB_PASSWORD in .env to the superuser's password, then run the rotation again",
    )


# -- steps ---------------------------------------------------------------------------------------


def _alter(ctx: RotationContext, name: str, role: str) -> None:
    new = ctx.store.staged(name)
    if new is None:  # already in use (.env updated by an earlier run)
        return
    with admin_connection(ctx) as conn:
        set_role_password(conn, role, new)
    ctx.progress.done(f"new password set on role {role}")


def _commit(ctx: RotationContext, name: str, **extra: str) -> None:
    if ctx.swap(name, extra=extra or None):
        ctx.progress.done(
            f"{name} updated in .env" + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")
        )


def grant_next_role(ctx: RotationContext) -> None:
    new = ctx.store.staged("DB_APP_PASSWORD")
    if new is None:
        return
    role = ctx.journal.app_user_to
    assert role is not None
    with admin_connection(ctx) as conn, conn.transaction():
        set_role_password(conn, role, new, member_of=APP_GROUP_ROLE)
    ctx.progress.done(
        f"{role} may log in with the new password (member of {APP_GROUP_ROLE}); {ctx.journal.app_user_from} still works"
    )


def _sessions(conn: psycopg.Connection, role: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()", (role,)
    ).fetchone()
    return int(row[0]) if row else 0


def revoke_old_role(ctx: RotationContext) -> None:
    """Close the old app role once the services use the new one: NOLOGIN, no password, and
    its leftover sessions ended."""
    from psycopg import sql

    old, new = ctx.journal.app_user_from, ctx.journal.app_user_to
    assert old is not None and new is not None
    services = ctx.running(_APP_SERVICES)
    with admin_connection(ctx) as conn:
        deadline = time.monotonic() + MOVE_TIMEOUT_S
        while services and _sessions(conn, new) == 0:
            if time.monotonic() > deadline:
                raise LlmobsError(
                    f"{', '.join(services)} did not connect as {new} within {MOVE_TIMEOUT_S:.0f} s; "
                    f"{old} is left open so nothing breaks",
                    hint="see `llmobs logs api` / `llmobs logs collector`, then run the rotation again",
                )
            time.sleep(0.5)
        while _sessions(conn, old) and time.monotonic() < deadline:
            time.sleep(0.5)
        conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(old)))
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s", (old,)
        ).fetchone()
    ended = int(row[0]) if row else 0
    ctx.progress.done(
        f"{old} closed (NOLOGIN, no password)"
        + (f"; {ended} leftover session(s) ended" if ended else "; no session left on it")
    )


def steps(after_superuser: Sequence[Step] = ()) -> list[Step]:
    """The database's steps; ``after_superuser`` run right after the superuser's new password is in
    ``.env`` (Patroni's nodes under the `ha` profile take it there: patroni_auth)."""
    return [
        Step(
            "db.superuser.alter",
            f"Setting the new password of {SUPERUSER}",
            lambda ctx: _alter(ctx, "DB_PASSWORD", SUPERUSER),
        ),
        Step("db.superuser.commit", "Writing DB_PASSWORD", lambda ctx: _commit(ctx, "DB_PASSWORD")),
        *after_superuser,
        Step(
            "db.readonly.alter",
            f"Setting the new password of {READONLY_ROLE}",
            lambda ctx: _alter(ctx, "DB_READONLY_PASSWORD", READONLY_ROLE),
        ),
        Step("db.readonly.commit", "Writing DB_READONLY_PASSWORD", lambda ctx: _commit(ctx, "DB_READONLY_PASSWORD")),
        Step("db.app.grant", "Opening the idle app login role with the new password", grant_next_role),
        Step(
            "db.app.commit",
            "Switching DB_APP_USER and DB_APP_PASSWORD",
            lambda ctx: _commit(ctx, "DB_APP_PASSWORD", DB_APP_USER=str(ctx.journal.app_user_to)),
        ),
    ]


def after_restart_steps() -> list[Step]:
    return [Step("db.app.revoke", "Closing the old app login role", revoke_old_role)]


# -- final check ---------------------------------------------------------------------------------


def verify(ctx: RotationContext) -> None:
    settings = ctx.settings()
    for role, name, user in (
        ("admin", "DB_PASSWORD", SUPERUSER),
        ("readonly", "DB_READONLY_PASSWORD", READONLY_ROLE),
        ("app", "DB_APP_PASSWORD", settings.get_str("DB_APP_USER")),
    ):
        conn = login(settings, user, settings.secret(name))
        if conn is None:
            raise LlmobsError(
                f"PostgreSQL refuses the new {name} for {user}",
                hint="run the rotation again; it resumes where it stopped",
            )
        conn.close()
        old_user = ctx.journal.app_user_from if role == "app" else user
        old = ctx.store.retired(name)
        if old and old_user:
            conn = login(settings, old_user, old)
            if conn is not None:
                conn.close()
                raise LlmobsError(
                    f"PostgreSQL still accepts the old {name} for {old_user}",
                    hint="run the rotation again; it resumes where it stopped",
                )
        ctx.check(
            f"PostgreSQL: {user} logs in with the new {name}"
            + (f"; the old one is refused{f' (and {old_user} is closed)' if role == 'app' else ''}" if old else "")
        )
