"""Backup outcomes, volume usage and certificate expiry as Prometheus metrics: a real backup run
that fails, the maintenance pass and the real prometheus-postgres-exporter with the shipped
queries, against a real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from llmobs.backup.jobs import create_backup
from llmobs.config import Settings
from llmobs.errors import LlmobsError
from llmobs.progress import SilentProgress
from llmobs.stack import monitoring
from llmobs.stack.layout import LocalLayout
from llmobs.store.host_facts import HostFacts
from llmobs.store.maintain import maintain_once

from helpers.common import free_port, require


def _certificate(path: Path, not_after: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmobs.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_after - timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _scrape(url: str, timeout: float = 20) -> dict[str, dict[tuple, float]]:
    """name → {sorted label items: value} (without the exporter's ``server`` label), once the
    exporter answers with our queries' metrics."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            if "llmobs_backup_last_success_timestamp_seconds" in text:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no llmobs metrics from {url}")
        time.sleep(0.3)
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "server"))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def test_backup_outcomes_volumes_and_certificates_reach_prometheus(settings: Settings, admin_conn, workdir: Path):
    require(shutil.which("prometheus-postgres-exporter") is not None, "prometheus-postgres-exporter not installed")
    project = workdir / "project"
    project.mkdir()
    settings = Settings({**settings._raw, "POSTGRES_EXPORTER_PORT": str(free_port())}, project)
    # A good logical backup on record, then a physical run that fails for real (no such server binaries).
    good_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    admin_conn.execute(
        "INSERT INTO llmobs_backups (id, kind, started_at, finished_at, status, size_bytes) "
        "VALUES ('L1', 'logical', %s, %s, 'ok', 4096)",
        (good_at - timedelta(seconds=42), good_at),
    )
    broken = Settings({**settings._raw, "BACKUP_DIR": str(workdir / "backups"), "PG_BIN_DIR": "/nonexistent"}, project)
    with pytest.raises(LlmobsError):
        create_backup(broken, "physical", SilentProgress(), upload=False)

    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    _certificate(workdir / "server.crt", expires)
    (workdir / "volume").mkdir()
    result = maintain_once(settings, HostFacts({"db-data": workdir / "volume"}, [workdir / "server.crt"]))
    assert result.host_facts == ["db-data", "server.crt"]

    spec = monitoring.process_spec("postgres-exporter", settings, LocalLayout(project))
    proc = subprocess.Popen(spec.argv, env=spec.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = _scrape(f"http://127.0.0.1:{settings.get_int('POSTGRES_EXPORTER_PORT')}/metrics")
    finally:
        proc.terminate()
        proc.wait(10)

    assert metrics["pg_up"][()] == 1
    logical, physical = (("kind", "logical"),), (("kind", "physical"),)
    assert metrics["llmobs_backup_last_success_timestamp_seconds"][logical] == good_at.timestamp()
    assert metrics["llmobs_backup_last_duration_seconds"][logical] == 42
    assert metrics["llmobs_backup_last_size_bytes"][logical] == 4096
    assert metrics["llmobs_backup_failures_since_success"][logical] == 0
    assert metrics["llmobs_backup_failures_since_success"][physical] == 1
    assert metrics["llmobs_backup_last_success_timestamp_seconds"][physical] == 0
    volume = (("volume", "db-data"),)
    assert 0 < metrics["llmobs_volume_avail_bytes"][volume] <= metrics["llmobs_volume_size_bytes"][volume]
    cert = metrics["llmobs_certificate_not_after_timestamp_seconds"][(("certificate", "server.crt"),)]
    assert cert == expires.timestamp()
    assert metrics["llmobs_wal_archiver_failing"][()] == 0
    assert metrics["llmobs_replication_is_replica"][()] == 0
    assert metrics["llmobs_replication_lag_seconds"][()] == 0
    # The password reaches the exporter through a 0600 file, never its arguments.
    assert settings.secret("DB_PASSWORD") not in " ".join(spec.argv)
    assert (monitoring.monitoring_dir(LocalLayout(project)) / "postgres-password").stat().st_mode & 0o077 == 0
