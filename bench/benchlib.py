"""What the benchmarks share: free ports, throwaway PostgreSQL/Redis servers, the CLI.

Each benchmark runs standalone (``.venv/bin/python bench/NAME.py``); this module sits beside
them, so it is importable as ``benchlib``, and it puts the repository on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmobs.config import SETTINGS  # noqa: E402

PORT_KEYS = tuple(s.name for s in SETTINGS if s.kind == "port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports_lines() -> list[str]:
    """``KEY=port`` lines putting every port setting of a project on its own free loopback port
    (the sockets stay bound until all are picked, so no port comes twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in PORT_KEYS]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"{key}={s.getsockname()[1]}\n" for key, s in zip(PORT_KEYS, socks, strict=True)]


def init_project(root: Path) -> Path:
    """``llmobs init`` of ``root/proj`` with every port on a free loopback port; the project directory."""
    project = root / "proj"
    subprocess.run([sys.executable, "-m", "llmobs", "init", str(project)], check=True, capture_output=True)
    with (project / ".env").open("a") as fh:
        fh.writelines(free_ports_lines())
    return project


@contextmanager
def throwaway_project() -> Iterator[Path]:
    """A new project on free ports under /tmp; stopped (`llmobs down`) and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-"))
    root.chmod(0o755)
    project = init_project(root)
    try:
        yield project
    finally:
        subprocess.run([sys.executable, "-m", "llmobs", "--project-dir", str(project), "down"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def local_stack(prefix: str, *services: str, env_lines: tuple[str, ...] = ()) -> Iterator[Path]:
    """A new project under /tmp (``prefix``) on free ports, ``env_lines`` appended to its .env,
    with ``services`` up in the local runtime; stopped (`llmobs down`) and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    project = root / "proj"
    try:
        init_project(root)
        with (project / ".env").open("a") as fh:
            fh.writelines(env_lines)
        llmobs(project, "up", "--runtime", "local", *services)
        yield project
    finally:
        subprocess.run(
            [sys.executable, "-m", "llmobs", "--project-dir", str(project), "down"], capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def llmobs(project: Path, *args: str) -> str:
    """Run the real CLI on ``project``; stdout, or exit on failure (1 = degraded is fine)."""
    proc = subprocess.run(
        [sys.executable, "-m", "llmobs", "--project-dir", str(project), *args], capture_output=True, text=True
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"llmobs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def start_server(
    args: list[str], env: dict[str, str], log_file: Path, ready_url: str, *, tree: Path | None = None
) -> subprocess.Popen:
    """``python -m llmobs serve ...`` in its own process group, logging to ``log_file``; returned
    once ``ready_url`` answers 200. ``tree``: another checkout whose llmobs to run (``-m`` imports
    it from the working directory)."""
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmobs", "serve", *args],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            cwd=tree,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{args[0]} exited: {log_file.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"{args[0]} did not become ready")


def stop_server(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM lets the server drain (it stops its own workers); only a hung one is killed, with
    its process group."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def server_env(**extra: str) -> dict[str, str]:
    """Settings for servers started by a benchmark: generated secrets, free ports."""
    from llmobs.config import generate_password
    from llmobs.store.apikeys import generate_api_key

    env = {
        "LLMOBS_RUNTIME": "local",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(free_port()),
        "DB_NAME": "llmobs_bench",
        "DB_PASSWORD": generate_password(),
        "DB_APP_PASSWORD": generate_password(),
        "DB_READONLY_PASSWORD": generate_password(),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "REDIS_PASSWORD": generate_password(),
        "SECRET_KEY": generate_password(48),
        "LLMOBS_ADMIN_API_KEY": generate_api_key().token,
        "LLMOBS_INGEST_API_KEY": generate_api_key().token,
        "LLMOBS_LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


@dataclass
class Infra:
    """PostgreSQL and Redis under ``root``, started with the project's own process control."""

    root: Path
    env: dict[str, str]
    cluster: object
    redis: object

    @classmethod
    def start(
        cls, root: Path, env: dict[str, str], *, pg_settings: dict[str, str] | None = None, reuse: bool = False
    ) -> Infra:
        """Start the servers; with ``reuse``, ``root`` holds them from an earlier run (and its env)."""
        from llmobs.proc import OsUser
        from llmobs.stack.postgres import PgCluster, PgConfig
        from llmobs.stack.redis_server import RedisServer

        state_file = root / "bench-env.json"
        if reuse and state_file.exists():
            env = json.loads(state_file.read_text())
        else:
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o755)
            fd = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(env, fh)
        os_user = OsUser.lookup("postgres") if os.geteuid() == 0 else None
        cluster = PgCluster(root / "pg" / "data", log_file=root / "pg" / "postgres.log", os_user=os_user)
        cluster.prepare_dirs(root / "pg" / "run")
        if not cluster.initialized:
            cluster.init(env["DB_PASSWORD"])
        cluster.write_config(PgConfig("127.0.0.1", int(env["DB_PORT"]), root / "pg" / "run", extra=pg_settings))
        cluster.start()
        redis = RedisServer(
            root / "redis" / "redis.conf",
            root / "redis" / "data",
            root / "redis" / "redis.pid",
            root / "redis" / "redis.log",
        )
        redis.write_config(
            bind="127.0.0.1", port=int(env["REDIS_PORT"]), user="llmobs", passwords=[env["REDIS_PASSWORD"]]
        )
        redis.start()
        return cls(root, env, cluster, redis)

    def stop(self) -> None:
        self.redis.stop()  # type: ignore[attr-defined]
        self.cluster.stop(mode="fast")  # type: ignore[attr-defined]
