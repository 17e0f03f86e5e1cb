"""Rotating the JWT signing key in two phases, so that no replica ever refuses a token another
replica signed:

1. accept (``jwt.accept``): the new key is staged in ``.env`` as ``SECRET_KEY_NEXT`` (or named
   there as ``SECRET_KEY_NEXT_FILE``), and a rolling restart of the api makes every replica
   accept it while all of them still sign with the current key;
2. switch (``jwt.commit``, then the rotation's rolling restart): the new key becomes
   ``SECRET_KEY`` (new ``kid``) and the old one ``SECRET_KEY_PREVIOUS``, accepted until
   ``SECRET_KEY_PREVIOUS_UNTIL`` so tokens already handed out keep working for their lifetime.
   Replicas not yet replaced accept the new key from phase 1; replaced ones accept the old one.

Later runs drop a previous key whose grace period is over.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from llmobs.api.tokens import TokenSigner, kid_for
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
    new = ctx.store.staged(NAME)
    if new is None:
        return
    settings = ctx.settings()
    old = settings.secret(NAME)
    now = datetime.now(UTC)
    grace, ttl = grace_seconds(ctx), settings.get_int("API_JWT_TTL_SECONDS")
    if grace < ttl:
        ctx.warn(
            f"SECRETS_JWT_GRACE_SECONDS={grace} is shorter than the token lifetime API_JWT_TTL_SECONDS={ttl}: "
            "tokens issued shortly before now are refused before they expire"
        )
    earlier = _parse_until(settings.get_str("SECRET_KEY_PREVIOUS_UNTIL"))
    if settings.has_secret("SECRET_KEY_PREVIOUS") and earlier and earlier > now:
        ctx.warn(
            f"the key before the current one was still in its grace period (until {earlier.isoformat()}); "
            "its tokens are refused from now on"
        )
    until = (now + timedelta(seconds=grace)).replace(microsecond=0)
    if ctx.swap(
        NAME, extra={"SECRET_KEY_PREVIOUS": old, "SECRET_KEY_PREVIOUS_UNTIL": until.isoformat()}, keep_old=False
    ):
        ctx.progress.done(
            f"new JWT signing key (kid {kid_for(new)}); tokens signed with the previous key "
            f"(kid {kid_for(old)}) are accepted until {until.isoformat()}"
        )


def accept(ctx: RotationContext) -> None:
    """Phase 1: every api replica restarted with the staged key among the keys it accepts, then
    a token signed with the staged key presented to the API (see :func:`_staged_key_refusals`)."""

    staged = ctx.store.staged(NAME)
    if staged is None:  # already switched: nothing left to accept first
        return
    if not ctx.running(["api"]):
        ctx.progress.done("the api is not running: no replica to prepare for the new JWT key")
        return
    ctx.rolling_restart(["api"])
    probe = _admin_token(ctx, "whether the API accepts the new JWT key")
    if probe is None:
        return
    api, token = probe
    refusals = _staged_key_refusals(api, token, staged)
    if refusals:
        ctx.warn(
            f"the API refused a token signed with the new JWT key ({refusals}): while the replicas switch "
            "keys, a token from a replaced replica may be refused by one not yet replaced for a few "
            "seconds (is the api image older than this llmobs?)"
        )
        return
    ctx.check(f"API: accepts tokens signed with the new key (kid {kid_for(staged)}) before signing with it")


#: tries of the staged-key check, each on a new connection, so that with several replicas more
#: than one is likely asked (they were all started alike)
_ACCEPT_PROBES = 4


def _staged_key_refusals(api: str, token: str, staged: str) -> str:
    """Present a short-lived token with the claims of ``token`` (one the API issued) but signed
    with the staged key; the HTTP statuses other than 200, if any."""
    from datetime import timedelta

    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    probe = (
        TokenSigner(staged, ttl=timedelta(seconds=60))
        .issue(key_id=claims["sub"], project_id=claims["pid"], role=claims["role"])
        .token
    )
    statuses = [
        request(f"{api}/api/v1/audit?limit=1", headers={"Authorization": f"Bearer {probe}"}, service="the API")[0]
        for _ in range(_ACCEPT_PROBES)
    ]
    return ", ".join(f"HTTP {s}" for s in statuses if s != 200)


def accept_steps() -> list[Step]:
    return [Step("jwt.accept", "Letting every api replica accept the new JWT key", accept)]


def steps() -> list[Step]:
    return [Step("jwt.commit", "Writing the new JWT signing key", commit)]


def _admin_token(ctx: RotationContext, what: str) -> tuple[str, str] | None:
    """The API's base URL and a token the running api issued for the default project's admin key
    (LLMOBS_ADMIN_API_KEY); None, with a warning that ``what`` is not checked, when the key is
    not set."""
    settings = ctx.settings()
    if not settings.has_secret("LLMOBS_ADMIN_API_KEY"):
        ctx.warn(f"LLMOBS_ADMIN_API_KEY is not set: cannot ask the API for a token to check {what}")
        return None
    api = base_url(settings.client_host, settings.get_int("API_PORT"))
    status, body = request(
        f"{api}/api/v1/auth/token",
        method="POST",
        service="the API",
        headers={"Authorization": f"Bearer {settings.secret('LLMOBS_ADMIN_API_KEY')}"},
    )
    if status != 200:
        raise LlmobsError(f"the API did not issue a token (HTTP {status})", hint="see `llmobs logs api`")
    return api, json.loads(body)["access_token"]


def verify(ctx: RotationContext) -> None:
    """The API signs new tokens with the new key and accepts them. Needs the API running and the
    default project's admin key (LLMOBS_ADMIN_API_KEY); otherwise says what it could not check."""
    import jwt

    if not ctx.running(["api"]):
        ctx.warn("the api is not running: the new JWT key is checked when it starts")
        return
    probe = _admin_token(ctx, "the new JWT key")
    if probe is None:
        return
    api, token = probe
    if jwt.get_unverified_header(token).get("kid") != kid_for(ctx.settings().secret(NAME)):
        raise LlmobsError("the API still signs tokens with the old key", hint="run the rotation again")
    status, _ = request(f"{api}/api/v1/audit?limit=1", headers={"Authorization": f"Bearer {token}"}, service="the API")
    if status != 200:
        raise LlmobsError(
            f"the API refused a token signed with the new key (HTTP {status})", hint="see `llmobs logs api`"
        )
    until = ctx.settings().get_str("SECRET_KEY_PREVIOUS_UNTIL")
    ctx.check(
        "API: signs and accepts tokens with the new key"
        + (f"; tokens of the previous key are accepted until {until}" if until else "")
    )
