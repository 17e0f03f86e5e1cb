"""Rotating the JWT signing key: a new ``SECRET_KEY`` (new ``kid``); the old one becomes
``SECRET_KEY_PREVIOUS``, accepted until ``SECRET_KEY_PREVIOUS_UNTIL`` so tokens already handed
out keep working for their lifetime. Later runs drop a previous key whose grace period is over.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from llmobs.errors import LlmobsError
from llmobs.secrets.context import RotationContext, Step
from llmobs.secrets.http import base_url, request
from llmobs.secrets.store import SecretStore

NAME = "SECRET_KEY"


def _parse_until(text: str) -> datetime | None:
    try:
        until = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return until if until.tzinfo else until.replace(tzinfo=UTC)


def drop_expired_previous(store: SecretStore, now: datetime | None = None) -> datetime | None:
    """Remove SECRET_KEY_PREVIOUS from ``.env`` once its grace period is over (the API already
    refuses its tokens by then). Returns the end of the grace period it removed, if any."""
    until = _parse_until(store.plain("SECRET_KEY_PREVIOUS_UNTIL"))
    if not store.current("SECRET_KEY_PREVIOUS") or until is None or until > (now or datetime.now(UTC)):
        return None
    store.set_plain({"SECRET_KEY_PREVIOUS": "", "SECRET_KEY_PREVIOUS_UNTIL": ""})
    return until


def grace_seconds(ctx: RotationContext) -> int:
    settings = ctx.settings()
    return settings.get_int("SECRETS_JWT_GRACE_SECONDS") or settings.get_int("API_JWT_TTL_SECONDS")


def commit(ctx: RotationContext) -> None:
    from llmobs.api.tokens import kid_for

    new = ctx.store.staged(NAME)
    if new is None:
        return
    settings = ctx.settings()
    old = settings.secret(NAME)
    now = datetime.now(UTC)
    grace, ttl = grace_seconds(ctx), settings.get_int("API_JWT_TTL_SECONDS")
    if grace < ttl:
        ctx.warn(f"SECRETS_JWT_GRACE_SECONDS={grace} is shorter than the token lifetime API_JWT_TTL_SECONDS={ttl}: "
                 "tokens issued shortly before now are refused before they expire")
    earlier = _parse_until(settings.get_str("SECRET_KEY_PREVIOUS_UNTIL"))
    if settings.has_secret("SECRET_KEY_PREVIOUS") and earlier and earlier > now:
        ctx.warn(f"the key before the current one was still in its grace period (until {earlier.isoformat()}); "
                 "its tokens are refused from now on")
    until = (now + timedelta(seconds=grace)).replace(microsecond=0)
    if ctx.swap(NAME, extra={"SECRET_KEY_PREVIOUS": old, "SECRET_KEY_PREVIOUS_UNTIL": until.isoformat()},
                keep_old=False):
        ctx.progress.done(f"new JWT signing key (kid {kid_for(new)}); tokens signed with the previous key "
                          f"(kid {kid_for(old)}) are accepted until {until.isoformat()}")


def steps() -> list[Step]:
    return [Step("jwt.commit", "Writing the new JWT signing key", commit)]


def verify(ctx: RotationContext) -> None:
    """The API signs new tokens with the new key and accepts them. Needs the API running and the
    default project's admin key (LLMOBS_ADMIN_API_KEY); otherwise says what it could not check."""
    import jwt

    from llmobs.api.tokens import kid_for

    settings = ctx.settings()
    if not ctx.running(["api"]):
        ctx.warn("the api is not running: the new JWT key is checked when it starts")
        return
    if not settings.has_secret("LLMOBS_ADMIN_API_KEY"):
        ctx.warn("LLMOBS_ADMIN_API_KEY is not set: cannot ask the API for a token to check the new key")
        return
    api = base_url(settings.client_host, settings.get_int("API_PORT"))
    status, body = request(f"{api}/api/v1/auth/token", method="POST", service="the API",
                           headers={"Authorization": f"Bearer {settings.secret('LLMOBS_ADMIN_API_KEY')}"})
    if status != 200:
        raise LlmobsError(f"the API did not issue a token (HTTP {status})", hint="see `llmobs logs api`")
    token = json.loads(body)["access_token"]
    if jwt.get_unverified_header(token).get("kid") != kid_for(settings.secret(NAME)):
        raise LlmobsError("the API still signs tokens with the old key", hint="run the rotation again")
    status, _ = request(f"{api}/api/v1/audit?limit=1", headers={"Authorization": f"Bearer {token}"},
                        service="the API")
    if status != 200:
        raise LlmobsError(f"the API refused a token signed with the new key (HTTP {status})",
                          hint="see `llmobs logs api`")
    until = settings.get_str("SECRET_KEY_PREVIOUS_UNTIL")
    ctx.check("API: signs and accepts tokens with the new key"
              + (f"; tokens of the previous key are accepted until {until}" if until else ""))
