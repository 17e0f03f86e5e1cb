"""The `ha` profile's configuration, rendered from one definition for the compose stack and for the
production layout on three machines (docs/ha.md, docs/ha-production.md).

- :func:`haproxy_cfg`: db-proxy's configuration. ``compose/ha/haproxy.cfg`` is its output for the
  compose nodes (Docker's DNS); the production layout runs one HAProxy per client host (or behind
  a virtual IP) with the machines' addresses. A test keeps the compose file equal to the output.
- :func:`production_files`: per machine an etcd configuration (a three-member cluster: a quorum
  survives the loss of one machine) and a Patroni configuration (``compose/ha/patroni.yml`` with
  the machine's name and addresses and the three etcd members), plus ``haproxy.cfg``.
  ``scripts/gen-docs`` writes them for three example hosts into docs/ha-production.md.

No secret is rendered: Patroni's passwords go in a second file of its configuration directory
(as ``compose/ha/patroni-credentials.py`` writes it in the compose stack).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmobs.resources import resource_dir
from llmobs.stack.ha import NODES as COMPOSE_NODES

#: example hosts of docs/ha-production.md
EXAMPLE_HOSTS = ("pg-1.example.internal", "pg-2.example.internal", "pg-3.example.internal")
PATRONI_REST_PORT = 8008
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380

_HAPROXY_HEAD = """\
# db-proxy of the `ha` profile (docs/ha.md), rendered by llmobs/stack/ha_layout.py (edit it there):
# the write port (5432) goes to the Patroni leader, the read port (5433) to the replicas. Each node
# is checked through Patroni's REST API: OPTIONS /primary answers 200 on the leader only,
# OPTIONS /replica on a running replica only (OPTIONS: no body, so a check that closes early
# leaves no error in Patroni's log). A node marked down has its sessions cut at once, so
# clients reconnect to the new leader instead of waiting on a dead one.
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 3s
    timeout client 30m
    timeout server 30m
    timeout check 2s
    # Checked every 0.5 s, every 0.2 s once a check failed: a demoted or dead leader is out within
    # about 0.7 s (two failed checks, so one slow answer on a loaded host does not cut sessions),
    # a new leader in within 0.5 s of Patroni promoting it.
"""
_DOCKER_DNS = (
    "    default-server inter 500ms fastinter 200ms fall 2 rise 1 on-marked-down shutdown-sessions"
    " resolvers docker init-addr none\n"
    """
# Docker's DNS: db-N are found (again) as they start, stop and change address. db-3 runs only with
# HA_NODES=3; otherwise its name never resolves and it stays down.
resolvers docker
    nameserver dns 127.0.0.11:53
    resolve_retries 3
    timeout retry 1s
    hold valid 2s
    hold obsolete 2s
"""
)
_STATIC = """\
    default-server inter 500ms fastinter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
"""


def haproxy_cfg(servers: Sequence[tuple[str, str]], *, docker_dns: bool) -> str:
    """HAProxy's configuration for ``servers`` (name, address): ``listen primary`` on 5432 and
    ``listen replicas`` on 5433, each node checked on Patroni's REST port. ``docker_dns``: resolve
    the addresses through Docker's DNS (compose); else they are resolved once, at start."""
    lines = [_HAPROXY_HEAD + (_DOCKER_DNS if docker_dns else _STATIC)]
    for name, port, check, extra in (
        ("primary", 5432, "/primary", ""),
        ("replicas", 5433, "/replica", "    balance roundrobin\n"),
    ):
        lines.append(
            f"\nlisten {name}\n    bind *:{port}\n{extra}    option httpchk OPTIONS {check}\n"
            "    http-check expect status 200\n"
            + "".join(f"    server {node} {address}:5432 check port {PATRONI_REST_PORT}\n" for node, address in servers)
        )
    return "".join(lines)


def compose_haproxy_cfg() -> str:
    """What ``compose/ha/haproxy.cfg`` holds."""
    return haproxy_cfg([(n, n) for n in COMPOSE_NODES], docker_dns=True)


def etcd_config(hosts: Sequence[str], index: int) -> dict[str, Any]:
    """etcd's configuration file (``etcd --config-file``) of member ``index`` of ``hosts``."""
    host = hosts[index]
    return {
        "name": f"etcd-{index + 1}",
        "data-dir": "/var/lib/etcd/llmobs",
        "listen-client-urls": f"http://0.0.0.0:{ETCD_CLIENT_PORT}",
        "advertise-client-urls": f"http://{host}:{ETCD_CLIENT_PORT}",
        "listen-peer-urls": f"http://0.0.0.0:{ETCD_PEER_PORT}",
        "initial-advertise-peer-urls": f"http://{host}:{ETCD_PEER_PORT}",
        "initial-cluster": ",".join(f"etcd-{i + 1}=http://{h}:{ETCD_PEER_PORT}" for i, h in enumerate(hosts)),
        "initial-cluster-state": "new",
        "initial-cluster-token": "llmobs",
    }


def patroni_config(hosts: Sequence[str], index: int) -> dict[str, Any]:
    """compose/ha/patroni.yml for the node on ``hosts[index]``: its name and addresses, and every
    etcd member (Patroni asks whichever answers)."""
    import yaml

    config: dict[str, Any] = yaml.safe_load((resource_dir("compose") / "ha" / "patroni.yml").read_text())
    host = hosts[index]
    config["name"] = f"db-{index + 1}"
    config["etcd3"] = {"hosts": [f"{h}:{ETCD_CLIENT_PORT}" for h in hosts]}
    config["restapi"]["connect_address"] = f"{host}:{PATRONI_REST_PORT}"
    config["postgresql"]["connect_address"] = f"{host}:5432"
    return config


def production_files(hosts: Sequence[str] = EXAMPLE_HOSTS) -> dict[str, str]:
    """Path -> text of the production layout: ``HOST/etcd.conf.yml`` and ``HOST/patroni.yml`` per
    machine, and ``haproxy.cfg`` for every client host. ValueError unless 3 distinct hosts (or
    more, odd: an even etcd cluster tolerates no more failures than the odd one below it)."""
    import yaml

    if len(set(hosts)) != len(hosts) or len(hosts) < 3 or len(hosts) % 2 == 0:
        raise ValueError(f"the production layout needs 3 (or 5, ...) distinct hosts, not {list(hosts)}")
    files: dict[str, str] = {}
    for i, host in enumerate(hosts):
        files[f"{host}/etcd.conf.yml"] = yaml.safe_dump(etcd_config(hosts, i), sort_keys=False)
        files[f"{host}/patroni.yml"] = yaml.safe_dump(patroni_config(hosts, i), sort_keys=False, width=120)
    files["haproxy.cfg"] = haproxy_cfg([(f"db-{i + 1}", h) for i, h in enumerate(hosts)], docker_dns=False)
    return files


def render_production_doc(hosts: Sequence[str] = EXAMPLE_HOSTS) -> str:
    """docs/ha-production.md: every file of :func:`production_files` for ``hosts``."""
    out = [
        "# The `ha` production layout on three machines (rendered)\n\n",
        "Written by `scripts/gen-docs` from `llmobs/stack/ha_layout.py` (do not edit; a test keeps it\n",
        "current). What runs where and why, and what to do when a machine fails: [ha.md](ha.md).\n\n",
        f"Hosts: {', '.join(f'`{h}`' for h in hosts)}. Each runs etcd (`etcd --config-file\n",
        "etcd.conf.yml`) and Patroni (`patroni DIR`, where DIR holds `patroni.yml` and a file with the\n",
        "passwords, `postgresql.authentication` and `restapi.authentication`, readable by postgres only).\n",
        "Every client host runs HAProxy with `haproxy.cfg` (or one HAProxy pair behind a virtual IP).\n",
    ]
    for path, text in production_files(hosts).items():
        lang = "yaml" if path.endswith(".yml") else "text"
        out.append(f"\n## `{path}`\n\n```{lang}\n{text}```\n")
    return "".join(out)
