"""Backup and restore timings on >= 1 GB of spans: `llmobs backup --type physical|logical` and a
full `llmobs restore`, against plain `pg_basebackup`, `pg_dump -Fc` and a plain restore (unpack +
start) of the same data, in the same run. Target: our overhead at most 20 %.

    .venv/bin/python bench/backup.py [--size-gb 1.0] [--rounds 2]

Creates a throwaway local-runtime project on free ports under /tmp and removes it afterwards.
Both sides use the same compression (gzip level BACKUP_COMPRESSION_LEVEL, default 1); each
figure is the best of ``--rounds`` (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchlib import free_port, free_ports_lines, llmobs

from llmobs.config import read_env_file
from llmobs.proc import OsUser
from llmobs.stack.postgres import PgBinaries, PgCluster, PgConfig


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def plain_restore(cluster: PgCluster, base: Path, level: str, user: OsUser | None, socket_dir: Path) -> None:
    """What restoring by hand takes: unpack base and WAL, hand them to the OS user, start."""
    cluster.prepare_dirs(socket_dir)
    gz, suffix = (["-z"], ".gz") if level != "0" else ([], "")
    data = cluster.data_dir
    run(["tar", "--no-same-owner", *gz, "-x", "-f", str(base / f"base.tar{suffix}"), "-C", str(data)])
    run(["tar", "--no-same-owner", *gz, "-x", "-f", str(base / f"pg_wal.tar{suffix}"), "-C", str(data / "pg_wal")])
    if user:
        run(["chown", "-R", f"{user.uid}:{user.gid}", str(data)])
    cluster.write_config(PgConfig("127.0.0.1", free_port(), socket_dir))
    cluster.start(timeout=600)


def fill_spans(env: dict[str, str], size_gb: float) -> int:
    import psycopg

    target = int(size_gb * 1024**3)
    with psycopg.connect(
        host="127.0.0.1",
        port=int(env["DB_PORT"]),
        user="postgres",
        password=env["DB_PASSWORD"],
        dbname=env["DB_NAME"],
        autocommit=True,
    ) as conn:
        conn.execute("SELECT llmobs_ensure_span_partition(current_date)")
        offset = 0
        while True:
            size = (
                conn.execute(
                    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'spans'::regclass"
                ).fetchone()[0]
                or 0
            )
            if size >= target:
                return int(size)
            conn.execute(
                """
                INSERT INTO spans (project_id, trace_id, span_id, service_name, name, kind, start_time, end_time,
                                   duration_ms, status_code, provider, request_model, response_model, operation,
                                   input_tokens, output_tokens, total_tokens, cost_usd, attributes)
                SELECT 1, md5(g::text), left(md5((g * 7)::text), 16), 'bench', 'chat gpt-4o', 'client',
                       date_trunc('day', now()) + g * interval '20 ms', date_trunc('day', now()) + g * interval '20 ms'
                       + interval '800 ms', 800, 'ok', 'openai', 'gpt-4o', 'gpt-4o-2024-08-06', 'chat',
                       g %% 1000, g %% 300, g %% 1300, (g %% 1300) * 0.00001,
                       jsonb_build_object('gen_ai.prompt', repeat(md5(g::text) || ' ', 16),
                                          'gen_ai.completion', repeat(md5((g + 1)::text) || ' ', 8))
                FROM generate_series(%s, %s) g""",
                (offset, offset + 99_999),
            )
            offset += 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-backup-"))
    root.chmod(0o755)
    project = root / "proj"
    scratch = root / "scratch"
    scratch.mkdir()
    scratch.chmod(0o755)
    try:
        subprocess.run([sys.executable, "-m", "llmobs", "init", str(project)], check=True, capture_output=True)
        with (project / ".env").open("a") as fh:
            fh.writelines(free_ports_lines())
        llmobs(project, "up", "--runtime", "local", "timescaledb", "redis")
        env = read_env_file(project / ".env")
        print(f"filling spans up to {args.size_gb:g} GB ...", flush=True)
        size = fill_spans(env, args.size_gb)
        print(f"spans: {size / 1024**3:.2f} GB (tables + indexes)", flush=True)

        binaries = PgBinaries.find(env.get("PG_BIN_DIR", ""))
        level = env.get("BACKUP_COMPRESSION_LEVEL", "1")
        pg_env = {
            "PATH": "/usr/bin:/bin",
            "PGPASSWORD": env["DB_PASSWORD"],
            "PGHOST": "127.0.0.1",
            "PGPORT": env["DB_PORT"],
            "PGUSER": "postgres",
        }
        times: dict[str, list[float]] = {
            k: []
            for k in (
                "plain physical",
                "ours physical",
                "plain logical",
                "ours logical",
                "plain restore",
                "ours restore",
            )
        }
        physical_id = ""
        plain_base = scratch / "plain-base"
        dump = scratch / "plain.pgdump"
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ...", flush=True)
            shutil.rmtree(plain_base, ignore_errors=True)
            times["plain physical"].append(
                timed(
                    lambda: run(
                        [
                            str(binaries("pg_basebackup")),
                            "-D",
                            str(plain_base),
                            "-Ft",
                            "-X",
                            "stream",
                            "-c",
                            "fast",
                            *([f"--compress=client-gzip:{level}"] if level != "0" else []),
                        ],
                        pg_env,
                    )
                )
            )
            if physical_id:
                shutil.rmtree(project / "backups" / physical_id, ignore_errors=True)
            times["ours physical"].append(timed(lambda: llmobs(project, "backup", "--type", "physical", "--no-upload")))
            physical_id = sorted(p.name for p in (project / "backups").glob("*-physical"))[-1]
            times["plain logical"].append(
                timed(
                    partial(
                        run, [str(binaries("pg_dump")), "-Fc", f"-Z{level}", "-f", str(dump), env["DB_NAME"]], pg_env
                    )
                )
            )
            dump.unlink()
            for old in (project / "backups").glob("*-logical"):
                shutil.rmtree(old)
            times["ours logical"].append(timed(lambda: llmobs(project, "backup", "--type", "logical", "--no-upload")))

        user = OsUser.lookup(env.get("PG_OS_USER") or "postgres") if os.geteuid() == 0 else None
        for r in range(args.rounds):
            print(f"restore round {r + 1}/{args.rounds} ...", flush=True)
            data = scratch / f"plain-restore-{r}"
            cluster = PgCluster(data, log_file=scratch / f"plain-restore-{r}.log", os_user=user, binaries=binaries)

            times["plain restore"].append(
                timed(partial(plain_restore, cluster, plain_base, level, user, scratch / f"sock-{r}"))
            )
            cluster.stop(mode="immediate")
            shutil.rmtree(data)
            times["ours restore"].append(timed(lambda: llmobs(project, "restore", physical_id, "--yes")))
            for item in json.loads(llmobs(project, "backup", "kept-aside", "--json"))["kept_aside"]:
                llmobs(project, "backup", "kept-aside", "remove", item["name"], "--yes")

        print()
        print(f"{'operation':<10} {'plain (s)':>10} {'llmobs (s)':>11} {'overhead':>9}   (best of {args.rounds})")
        for op in ("physical", "logical", "restore"):
            plain, ours = min(times[f"plain {op}"]), min(times[f"ours {op}"])
            print(f"{op:<10} {plain:>10.2f} {ours:>11.2f} {100 * (ours - plain) / plain:>8.1f}%")
        print("target: overhead <= 20 %")
    finally:
        subprocess.run([sys.executable, "-m", "llmobs", "--project-dir", str(project), "down"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
