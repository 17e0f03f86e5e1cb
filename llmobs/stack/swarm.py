"""A Docker Swarm stack file rendered from the compose configuration (`llmobs swarm render`).

`docker stack deploy` takes a narrower format than compose (version 3.8 with the 20.10 CLI):
no `build`, `profiles`, `pull_policy`, `depends_on` conditions or host IPs on ports. The
rendering starts from the effective compose configuration (files, overlays, profiles and
settings all applied) and keeps what swarm understands:

- ports in host mode and every service with ``endpoint_mode: dnsrr``: without IPVS in the
  kernel (as on these machines) swarm's virtual IPs and routing mesh do not work, and the proxy
  balances replicas through DNS anyway;
- the files compose bind-mounts from the llmobs package (entrypoints, nginx configuration,
  Grafana provisioning) become swarm configs, so no node needs them on disk;
- secrets and configs get a content hash in their name (swarm's are immutable: a changed
  value deploys as a new one), and secrets are readable only by the service's user;
- the network is an attachable overlay named like the compose one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.resources import resource_dir

if TYPE_CHECKING:
    from llmobs.stack.compose import ComposeStack

STACK_FILE_VERSION = "3.8"
#: service keys `docker stack deploy` accepts and honours
_KEPT = (
    "image",
    "entrypoint",
    "command",
    "user",
    "environment",
    "env_file",
    "healthcheck",
    "init",
    "read_only",
    "cap_add",
    "cap_drop",
    "logging",
    "stop_grace_period",
    "stop_signal",
)


def render_stack(stack: ComposeStack, replicas: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The stack file for ``stack``'s project as a dict (``render_stack_yaml`` for the text)."""
    config = stack.config
    project = stack.project
    # Swarm refuses empty secrets: an unset optional one (SECRET_KEY_PREVIOUS) is left out, and
    # the service reads it as unset.
    secrets = {
        key: spec["file"]
        for key, spec in (config.get("secrets") or {}).items()
        if Path(spec["file"]).is_file() and Path(spec["file"]).stat().st_size > 0
    }
    configs: dict[str, dict[str, str]] = {}
    services = {
        name: _service(svc, project, configs, secrets, (replicas or {}).get(name))
        for name, svc in config["services"].items()
    }
    return {
        "version": STACK_FILE_VERSION,
        "services": services,
        "networks": {"default": {"name": stack.network_name(), "driver": "overlay", "attachable": True}},
        "volumes": {key: {"name": name} for key, name in stack.volume_names().items()},
        "secrets": {
            key: {"name": _object_name(project, key, Path(file)), "file": file} for key, file in secrets.items()
        },
        "configs": configs,
    }


def render_stack_yaml(stack: ComposeStack, replicas: Mapping[str, int] | None = None) -> str:
    import yaml

    header = (
        f"# Swarm stack for compose project {stack.project}, rendered by `llmobs swarm render`.\n"
        f"# docker stack deploy --resolve-image never -c FILE {stack.project}\n"
    )
    return header + yaml.safe_dump(render_stack(stack, replicas), sort_keys=False, width=120)


def _service(
    svc: dict[str, Any],
    project: str,
    configs: dict[str, dict[str, str]],
    secrets: Mapping[str, str],
    replicas: int | None,
) -> dict[str, Any]:
    out = {key: svc[key] for key in _KEPT if svc.get(key) not in (None, [], {})}
    if "env_file" in out:
        out["env_file"] = [
            e["path"] if isinstance(e, dict) else e
            for e in out["env_file"]
            if not isinstance(e, dict) or e.get("required", True) or Path(e["path"]).is_file()
        ]
    ports = [
        {
            "target": int(p["target"]),
            "published": int(p["published"]),
            "protocol": p.get("protocol", "tcp"),
            "mode": "host",
        }
        for p in svc.get("ports", [])
    ]
    if ports:
        out["ports"] = ports
    volumes, service_configs = _mounts(svc, project, configs)
    if volumes:
        out["volumes"] = volumes
    if service_configs:
        out["configs"] = service_configs
    refs = [_secret_ref(ref, svc.get("user")) for ref in svc.get("secrets", []) if ref["source"] in secrets]
    if refs:
        out["secrets"] = refs
    deploy: dict[str, Any] = {"endpoint_mode": "dnsrr", "replicas": replicas or 1}
    resources = (svc.get("deploy") or {}).get("resources")
    if resources:
        deploy["resources"] = resources
    deploy["restart_policy"] = {"condition": "any", "delay": "5s"}
    out["deploy"] = deploy
    return out


def _mounts(
    svc: dict[str, Any], project: str, configs: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes stay; bind mounts of llmobs's own files become configs; tmpfs becomes a mount."""
    packaged = [resource_dir("compose").resolve(), resource_dir("grafana-provisioning").resolve()]
    volumes: list[dict[str, Any]] = [{"type": "tmpfs", "target": t} for t in svc.get("tmpfs", [])]
    refs: list[dict[str, Any]] = []
    for mount in svc.get("volumes", []):
        source = Path(mount.get("source", ""))
        if mount.get("type") == "bind" and any(source.resolve().is_relative_to(p) for p in packaged):
            files = [source] if source.is_file() else sorted(f for f in source.rglob("*") if f.is_file())
            for file in files:
                target = mount["target"] if file == source else f"{mount['target']}/{file.relative_to(source)}"
                key = _config_key(target)
                configs[key] = {"name": _object_name(project, key, file), "file": str(file)}
                refs.append({"source": key, "target": target, "mode": 0o444})
            continue
        kept = {k: mount[k] for k in ("type", "source", "target", "read_only") if k in mount}
        volumes.append(kept)
    return volumes, refs


def _secret_ref(ref: dict[str, Any], user: str | None) -> dict[str, Any]:
    """Readable only by the service's user when it has a numeric one (swarm applies uid and mode;
    compose cannot). Services that start as root read their secrets before dropping privileges."""
    out = {"source": ref["source"], "target": Path(ref.get("target") or ref["source"]).name}
    uid, _, gid = (user or "").partition(":")
    if uid.isdigit():
        out.update(uid=uid, gid=gid if gid.isdigit() else uid, mode=0o400)
    return out


def _config_key(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", target.strip("/")).strip("_")


def _object_name(project: str, key: str, content: Path) -> str:
    """A swarm secret or config name (at most 64 characters), unique to the key and the content."""
    digest = hashlib.sha256(key.encode() + b"\0" + content.read_bytes()).hexdigest()[:10]
    return f"{project[:24]}-{key[-28:].strip('_')}-{digest}"
