"""Host facts recorded by the maintenance pass: how full the stack's volumes are and when its TLS
certificates expire (tables of migration 0080).

Only the process that runs beside the data can measure them (the local supervisor, or the compose
`maintenance` service with the volumes mounted read-only); recording them in the database lets
``prometheus-postgres-exporter`` expose them the same way in both runtimes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostFacts:
    """What to measure: volume name → a path on it, and certificate files (PEM)."""

    volumes: Mapping[str, Path]
    certificates: Sequence[Path] = ()


def volume_usage(path: Path) -> tuple[int, int]:
    """(size, bytes available to unprivileged writers) of the filesystem holding ``path``;
    OSError when it does not exist."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def certificate_not_after(path: Path) -> datetime:
    """Expiry of the first certificate in a PEM file; OSError or ValueError when unreadable."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def record_host_facts(conn: psycopg.Connection, facts: HostFacts) -> list[str]:
    """Upsert one row per volume and certificate that could be read; a path that cannot be read
    is logged and skipped (its row ages, which the alert rules do not mistake for free space).
    Returns the names recorded."""
    recorded = []
    for volume, path in facts.volumes.items():
        try:
            size, avail = volume_usage(path)
        except OSError as exc:
            log.warning("volume %s: cannot measure %s: %s", volume, path, exc.strerror)
            continue
        conn.execute(
            """INSERT INTO llmobs_volume_usage (volume, size_bytes, avail_bytes, updated_at)
               VALUES (%s, %s, %s, now())
               ON CONFLICT (volume) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
                   avail_bytes = EXCLUDED.avail_bytes, updated_at = now()""",
            (volume, size, avail),
        )
        recorded.append(volume)
    for cert in facts.certificates:
        try:
            not_after = certificate_not_after(cert)
        except (OSError, ValueError) as exc:
            log.warning("certificate %s cannot be read: %s", cert, exc)
            continue
        conn.execute(
            """INSERT INTO llmobs_certificates (certificate, not_after, updated_at) VALUES (%s, %s, now())
               ON CONFLICT (certificate) DO UPDATE SET not_after = EXCLUDED.not_after, updated_at = now()""",
            (cert.name, not_after),
        )
        recorded.append(cert.name)
    return recorded
