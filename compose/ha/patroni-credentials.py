"""Patroni's credentials for the `ha` profile's db-N, from the node's Docker secrets (docs/ha.md).

    python3 patroni-credentials.py render   # write CONFIG_DIR/50-credentials.yml (the entrypoint)
    python3 patroni-credentials.py reload   # the same, then SIGHUP: Patroni reloads its configuration

Patroni reads a directory of configuration files: 00-patroni.yml (compose/ha/patroni.yml) and the
file written here, readable by postgres only, with the superuser, replication and REST passwords.
Passwords kept in Patroni's environment could not change without a restart (environment values
win over the files at every reload); in a file they follow `llmobs secrets rotate ha`, which
rewrites the secrets and runs `reload` on every node. No password reaches a command line or the
environment. Runs as root (docker exec); exits non-zero with the reason on stderr.
"""

import json
import os
import pwd
import signal
import sys

CONFIG_DIR = "/run/patroni"
SECRETS = "/run/secrets"


def secret(name: str) -> str:
    with open(os.path.join(SECRETS, name), encoding="utf-8") as fh:
        value = fh.read().strip()
    if not value:
        sys.exit(f"patroni-credentials: the secret {name} is empty")
    return value


def render() -> None:
    superuser = secret("db_password")
    config = {
        "restapi": {"authentication": {"username": "patroni", "password": secret("patroni_rest_password")}},
        "postgresql": {
            "authentication": {
                "superuser": {"username": "postgres", "password": superuser},
                "replication": {"username": "replicator", "password": secret("db_replication_password")},
                "rewind": {"username": "postgres", "password": superuser},
            }
        },
    }
    postgres = pwd.getpwnam("postgres")
    os.makedirs(CONFIG_DIR, mode=0o700, exist_ok=True)
    os.chown(CONFIG_DIR, postgres.pw_uid, postgres.pw_gid)
    link = os.path.join(CONFIG_DIR, "00-patroni.yml")
    if not os.path.islink(link):
        os.symlink("/etc/llmobs/ha/patroni.yml", link)
    path = os.path.join(CONFIG_DIR, "50-credentials.yml")
    part = path + ".part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh)  # JSON is YAML
    os.chown(part, postgres.pw_uid, postgres.pw_gid)
    os.replace(part, path)


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action not in ("render", "reload"):
        sys.exit("usage: patroni-credentials.py render|reload")
    render()
    if action == "reload":
        # Straight to Patroni, as postgres: the container has no CAP_KILL, so root may not signal
        # it, and the init (PID 1) fails to pass a signal on and exits, stopping the container.
        postgres = pwd.getpwnam("postgres")
        os.setgid(postgres.pw_gid)
        os.setuid(postgres.pw_uid)
        os.kill(patroni_pid(), signal.SIGHUP)


def patroni_pid() -> int:
    """Patroni's process: the child of the container's init that runs /usr/bin/patroni."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == 1 and any(arg.endswith(b"/patroni") or arg == b"patroni" for arg in argv[:2]):
            return int(entry)
    sys.exit("patroni-credentials: Patroni is not running in this container")


if __name__ == "__main__":
    main()
