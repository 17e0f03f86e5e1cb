"""The compose files, overlays and image workflow, checked by `docker compose config` and by
reading them: names, secrets, hardening, and what the overlays keep from the base file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from llmobs.config import SETTINGS, Settings
from llmobs.resources import resource_dir

from helpers.compose import ROOT, offline_settings, require_compose

COMPOSE = resource_dir("compose")
OVERLAYS = {
    "base": ["docker-compose.yml"],
    "offline": ["docker-compose.yml", "docker-compose.offline.yml"],
    "prod": ["docker-compose.yml", "docker-compose.prod.yml"],
}
ALL_PROFILES = ["admin", "backup", "grafana", "ha", "ha-3"]
#: secrets only the CLI on the host uses (bootstrap stores the keys' hashes); no container needs them
HOST_ONLY_SECRETS = {"LLMOBS_ADMIN_API_KEY", "LLMOBS_INGEST_API_KEY"}


def compose_config(
    files: list[str], tmp_path: Path, *, project: str = "llm-observatory", profiles: list[str] = ALL_PROFILES
) -> dict:
    require_compose()
    cmd = ["docker", "compose", "--project-name", project]
    for name in files:
        cmd += ["--file", str(COMPOSE / name)]
    for profile in profiles:
        cmd += ["--profile", profile]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "COMPOSE_PROJECT_NAME": project,
        "LLMOBS_SECRETS_DIR": str(tmp_path / "secrets"),
        "LLMOBS_TLS_DIR": str(tmp_path / "tls"),
    }
    proc = subprocess.run([*cmd, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_file_and_profile_validates(overlay: str, tmp_path: Path):
    config = compose_config(OVERLAYS[overlay], tmp_path)
    services = set(config["services"])
    assert {"timescaledb", "redis", "api", "collector", "proxy", "grafana", "pgadmin", "backup"} <= services


def test_network_and_volumes_carry_the_project_name(tmp_path: Path):
    config = compose_config(OVERLAYS["base"], tmp_path, project="acme-obs")
    assert config["networks"]["default"]["name"] == "acme-obs-network"
    names = {spec["name"] for spec in config["volumes"].values()}
    assert names == {
        f"acme-obs-{v}"
        for v in (
            "db-data",
            "redis-data",
            "grafana-data",
            "pgadmin-data",
            "backup-data",
            "wal-archive",
            "etcd-data",
            "db-1-data",
            "db-2-data",
            "db-3-data",
        )
    }


def test_offline_overlay_never_pulls_and_leaves_grafana_to_a_profile(tmp_path: Path):
    active = compose_config(OVERLAYS["offline"], tmp_path, profiles=[])["services"]
    assert "grafana" not in active and "pgadmin" not in active
    for name, svc in active.items():
        assert svc.get("pull_policy") == "never", name


def test_ha_overlay_replaces_timescaledb_with_patroni_nodes_behind_db_proxy(tmp_path: Path):
    """With profile `ha` llmobs adds docker-compose.ha.yml: no timescaledb, and every client of
    PostgreSQL goes through db-proxy, which publishes the write and read ports."""
    files = [*OVERLAYS["offline"], "docker-compose.ha.yml"]
    services = compose_config(files, tmp_path, profiles=["backup", "ha", "restore"])["services"]
    assert "timescaledb" not in services
    assert {"etcd", "db-1", "db-2", "db-proxy"} <= set(services)
    for name in ("collector", "api", "maintenance", "backup"):
        assert services[name]["environment"]["DB_HOST"] == "db-proxy", name
        assert "timescaledb" not in services[name]["depends_on"], name
    published = {p["target"]: p["published"] for p in services["db-proxy"]["ports"]}
    assert published == {5432: "5432", 5433: "5433"}  # DB_PORT, DB_READ_PORT
    for node in ("db-1", "db-2"):
        env = services[node]["environment"]
        assert env["PATRONI_NAME"] == node and env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{node}:5432"
        assert not any("PASSWORD" in key for key in env), node
        assert {s["source"] for s in services[node]["secrets"]} == {
            "db_password",
            "db_replication_password",
            "patroni_rest_password",
        }
        assert services[node]["pull_policy"] == "never"
    # backups may read from a replica through the read port inside the network; restores put
    # the restored data into db-1's volume and clone db-2 anew
    assert services["backup"]["environment"]["DB_READ_PORT"] == "5433"
    restore = services["restore"]
    mounts = {v["target"]: v["source"] for v in restore["volumes"]}
    assert mounts["/var/lib/postgresql/data"] == "db-1-data" and mounts["/replicas/db-2"] == "db-2-data"
    assert mounts["/replicas/db-3"] == "db-3-data"
    assert restore["environment"]["BACKUP_PGDATA_DIR"] == "/var/lib/postgresql/data/pgdata"
    assert restore["environment"]["BACKUP_REPLICAS_DIR"] == "/replicas"
    patroni = yaml.safe_load((COMPOSE / "ha" / "patroni.yml").read_text())
    assert patroni["bootstrap"]["method"] == "initdb"
    assert patroni["bootstrap"]["llmobs_restore"]["keep_existing_recovery_conf"] is True
    dcs = patroni["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert "password" not in json.dumps(patroni["postgresql"]["authentication"])


@pytest.mark.parametrize("ha_nodes", ["2", "3"])
def test_ha_nodes_setting_runs_db_1_to_db_n(ha_nodes: str, tmp_path: Path):
    """HA_NODES=N: the compose configuration of `up --profile ha` has db-1..db-N, each its own
    Patroni member with its own volume, and db-proxy checks every one."""
    from llmobs.config import new_project_values, render_env_file, write_private_file
    from llmobs.stack.compose import ComposeStack

    values = new_project_values()
    write_private_file(tmp_path / ".env", render_env_file({**values, "HA_NODES": ha_nodes}))
    stack = ComposeStack(Settings.load(tmp_path, environ={}), profiles=("ha",))
    nodes = [f"db-{i}" for i in range(1, int(ha_nodes) + 1)]
    services = stack.config["services"]
    assert sorted(s for s in services if s.startswith("db-") and s != "db-proxy") == nodes
    for node in nodes:
        assert services[node]["environment"]["PATRONI_NAME"] == node
        assert [v["source"] for v in services[node]["volumes"] if v["target"] == "/var/lib/postgresql/data"] == [
            f"{node}-data"
        ]
    assert [s for s in stack.available_services() if s.startswith("db-") and s != "db-proxy"] == nodes
    haproxy = (COMPOSE / "ha" / "haproxy.cfg").read_text()
    assert all(haproxy.count(f"server {node} {node}:5432 check port 8008") == 2 for node in nodes)


def test_ha_production_layout_is_rendered_from_the_compose_definition(tmp_path: Path):
    """The three-machine layout (docs/ha-production.md): a three-member etcd cluster, one Patroni
    node per machine with the compose stack's settings, one haproxy.cfg that HAProxy accepts; the
    compose stack's haproxy.cfg and the doc are the same definition's output."""
    from llmobs.stack import ha_layout

    assert (COMPOSE / "ha" / "haproxy.cfg").read_text() == ha_layout.compose_haproxy_cfg(), (
        "compose/ha/haproxy.cfg is stale: write ha_layout.compose_haproxy_cfg() into it"
    )
    doc = (ROOT / "docs" / "ha-production.md").read_text()
    assert doc == ha_layout.render_production_doc(), "docs/ha-production.md is stale: run scripts/gen-docs"
    hosts = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    files = ha_layout.production_files(hosts)
    compose_patroni = yaml.safe_load((COMPOSE / "ha" / "patroni.yml").read_text())
    members = set()
    for i, host in enumerate(hosts):
        etcd = yaml.safe_load(files[f"{host}/etcd.conf.yml"])
        members.add(etcd["name"])
        assert (
            etcd["initial-cluster"].count("=http://") == 3
            and f"{etcd['name']}=http://{host}:2380" in (etcd["initial-cluster"])
        )
        patroni = yaml.safe_load(files[f"{host}/patroni.yml"])
        assert patroni["name"] == f"db-{i + 1}" and patroni["postgresql"]["connect_address"] == f"{host}:5432"
        assert patroni["etcd3"]["hosts"] == [f"{h}:2379" for h in hosts]
        assert patroni["bootstrap"] == compose_patroni["bootstrap"]
        assert "password" not in json.dumps([patroni["restapi"], patroni["postgresql"]["authentication"]])
    assert members == {"etcd-1", "etcd-2", "etcd-3"}
    with pytest.raises(ValueError):
        ha_layout.production_files(hosts[:2])
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(files["haproxy.cfg"])
    cfg.chmod(0o644)
    image = offline_settings()["LLMOBS_IMAGE_HAPROXY"]
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{cfg}:/cfg:ro", "--entrypoint", "haproxy", image,
         "-c", "-f", "/cfg"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_published_ports_bind_to_bind_address(tmp_path: Path):
    config = compose_config(OVERLAYS["base"], tmp_path)
    for name, svc in config["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    assert "ports" not in config["services"]["api"] and "ports" not in config["services"]["collector"]
    published = {p["published"] for p in config["services"]["proxy"]["ports"]}
    assert published == {"8080", "4317", "4318", "9464"}


def test_services_are_hardened_and_logs_capped(tmp_path: Path):
    services = compose_config(OVERLAYS["base"], tmp_path)["services"]
    for name, svc in services.items():
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc["logging"]["options"]["max-size"] and svc["logging"]["options"]["max-file"], name
        assert "healthcheck" in svc, name
    for name in ("api", "collector", "proxy", "redis", "backup"):
        assert services[name]["read_only"] is True, name
        assert services[name]["cap_drop"] == ["ALL"], name
        assert not services[name]["user"].startswith("0"), name
    for name in ("api", "collector", "backup"):
        assert services[name]["init"] is True, name
        assert services[name]["user"] == "1001:1001"
        for dep in ("timescaledb", "redis"):
            assert services[name]["depends_on"][dep]["condition"] == "service_healthy"


def test_every_secret_reaches_the_services_as_a_docker_secret(tmp_path: Path):
    """Each secret setting is a Docker secret file named after it (or used only on the host), and
    every service that mounts one is told where through NAME_FILE."""
    config = compose_config(OVERLAYS["base"], tmp_path)
    file_setting = {key: Path(spec["file"]).name for key, spec in config["secrets"].items()}
    secret_settings = {s.name for s in SETTINGS if s.secret}
    assert set(file_setting.values()) <= secret_settings | {"AWS_CREDENTIALS"}
    assert secret_settings - set(file_setting.values()) <= HOST_ONLY_SECRETS, (
        "a new secret setting must be added to compose/docker-compose.yml's secrets"
    )
    for name, svc in config["services"].items():
        env = svc.get("environment") or {}
        for value in env.values():
            assert value is None or not any(v in str(value) for v in ("password=", "PASSWORD=")), name
        for ref in svc.get("secrets", []):
            setting = file_setting[ref["source"]]
            if name in ("api", "collector", "backup") and setting != "AWS_CREDENTIALS":
                assert env.get(f"{setting}_FILE") == ref["target"], (name, setting)


def test_prod_overlay_keeps_wal_archiving_and_adds_limits_restart_and_tls(tmp_path: Path):
    base = compose_config(OVERLAYS["base"], tmp_path)["services"]
    prod = compose_config(OVERLAYS["prod"], tmp_path)["services"]
    base_cmd, prod_cmd = base["timescaledb"]["command"], prod["timescaledb"]["command"]
    assert prod_cmd[: len(base_cmd)] == base_cmd
    assert "ssl=on" in prod_cmd and any(a.startswith("shared_buffers=") for a in prod_cmd)
    # Grafana's datasource asks PostgreSQL for TLS where the server offers it
    assert base["grafana"]["environment"]["LLMOBS_DB_SSLMODE"] == "disable"
    assert prod["grafana"]["environment"]["LLMOBS_DB_SSLMODE"] == "require"
    for name, svc in prod.items():
        assert svc["restart"] == "unless-stopped", name
        assert svc["deploy"]["resources"]["limits"]["memory"], name
    proxy_mounts = {v["target"]: v["source"] for v in prod["proxy"]["volumes"]}
    assert proxy_mounts["/etc/nginx/llmobs/servers.conf"].endswith("servers-tls.conf")
    assert {"tls_cert", "tls_key"} <= {s["source"] for s in prod["proxy"]["secrets"]}


def test_compose_env_files_hold_no_secret_and_secret_files_are_private(tmp_path: Path):
    from llmobs.config import new_project_values, render_env_file, write_private_file
    from llmobs.stack.compose import ComposeStack

    values = new_project_values()
    write_private_file(tmp_path / ".env", render_env_file(values))
    stack = ComposeStack(Settings.load(tmp_path, environ={}))
    stack._write_env_files()
    secrets = [values[s.name] for s in SETTINGS if s.secret and values.get(s.name)]
    for name in ("compose.env", "app.env"):
        path = stack.state_dir / name
        assert path.stat().st_mode & 0o777 == 0o600
        text = path.read_text()
        assert not any(secret in text for secret in secrets), name
    assert stack.secrets_dir.stat().st_mode & 0o777 == 0o700
    assert (stack.secrets_dir / "DB_PASSWORD").read_text() == values["DB_PASSWORD"]
    assert stack.compose_files() == [COMPOSE / "docker-compose.yml"]


def test_image_workflow_parses_and_builds_the_dockerfile_that_exists():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "image.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert "push" in triggers
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    builds = [s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    assert builds, "no docker/build-push-action step"
    for step in builds:
        context = ROOT / step["with"].get("context", ".")
        dockerfile = context / step["with"].get("file", "Dockerfile")
        assert dockerfile.is_file(), dockerfile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 1001:1001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert dockerfile.count("\nFROM ") >= 3
