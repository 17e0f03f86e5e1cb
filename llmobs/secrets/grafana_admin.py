"""Rotating Grafana's admin password through its HTTP API (compose runtime; the local runtime
runs no Grafana and the rotation skips it).

The image's ``GF_SECURITY_ADMIN_PASSWORD__FILE`` only applies when Grafana creates its database,
so the running Grafana is asked to change the password (``PUT /api/user/password`` as admin);
``.env`` follows. Credentials travel in request headers and bodies, never in a URL.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from llmobs.errors import LlmobsError
from llmobs.secrets.context import RotationContext, Step
from llmobs.secrets.http import base_url, request

if TYPE_CHECKING:
    from llmobs.config import Settings

NAME = "GRAFANA_ADMIN_PASSWORD"
ADMIN_USER = "admin"


def _request(settings: Settings, method: str, path: str, password: str, body: dict | None = None) -> int:
    """HTTP status of an admin request to Grafana."""
    auth = base64.b64encode(f"{ADMIN_USER}:{password}".encode()).decode()
    url = base_url(settings.client_host, settings.get_int("GRAFANA_PORT")) + path
    status, _ = request(url, method=method, headers={"Authorization": f"Basic {auth}"}, body=body, service="Grafana")
    return status


def accepts(settings: Settings, password: str) -> bool:
    return _request(settings, "GET", "/api/user", password) == 200


def change(ctx: RotationContext) -> None:
    new = ctx.store.staged(NAME)
    if new is None:
        return
    settings = ctx.settings()
    if accepts(settings, new):  # changed by a run that stopped before updating .env
        return
    old = settings.secret(NAME)
    status = _request(
        settings, "PUT", "/api/user/password", old, {"oldPassword": old, "newPassword": new, "confirmNew": new}
    )
    if status != 200:
        raise LlmobsError(
            f"Grafana did not change the admin password (HTTP {status})",
            hint="check that GRAFANA_ADMIN_PASSWORD in .env is Grafana's admin password",
        )
    ctx.progress.done("Grafana admin password changed")


def commit(ctx: RotationContext) -> None:
    if ctx.swap(NAME):
        ctx.progress.done(f"{NAME} updated in .env")


def steps() -> list[Step]:
    return [
        Step("grafana.change", "Changing Grafana's admin password", change),
        Step("grafana.commit", f"Writing {NAME}", commit),
    ]


def verify(ctx: RotationContext) -> None:
    settings = ctx.settings()
    if not accepts(settings, settings.secret(NAME)):
        raise LlmobsError("Grafana refuses the new admin password", hint="run the rotation again")
    old = ctx.store.retired(NAME)
    if old and accepts(settings, old):
        raise LlmobsError("Grafana still accepts the old admin password", hint="run the rotation again")
    ctx.check("Grafana: admin logs in with the new password" + ("; the old one is refused" if old else ""))
