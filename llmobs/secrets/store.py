"""Where the rotated secrets live, and how a rotation stages and swaps them crash-safely.

A secret lives in the project's ``.env`` (``NAME``) or in the file named by ``NAME_FILE`` there.
While a rotation runs, up to three values of a secret sit side by side:

* ``NAME``          the value in use;
* ``NAME_NEXT``     the new value, staged before any server is changed, so that a rerun after a
                    crash applies the very same value (every step can be redone);
* ``NAME_RETIRED``  the old value after the swap, kept only until the final check has proved the
                    servers refuse it, then dropped.

For a file-backed secret the three are ``FILE``, ``FILE.next`` and ``FILE.retired``, and ``.env``
names the staged file as ``NAME_NEXT_FILE`` (the way settings read a secret from a file): what
reads a staged value as a setting (the api accepts ``SECRET_KEY_NEXT``) finds it in either form.
Every write goes through :func:`llmobs.config.write_private_file` (atomic, mode 0600): a crash
leaves the old or the new file, never a broken one.

A secret set in the environment of the command cannot be rotated: `.env` would change under a
value that overrides it. :meth:`SecretStore.check_rotatable` says so before anything changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from llmobs.config import ENV_FILE, Settings, read_env_file, render_env_file, write_private_file
from llmobs.errors import ConfigError

NEXT = "_NEXT"
RETIRED = "_RETIRED"


class SecretStore:
    def __init__(self, project_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.project_dir = project_dir
        self.env_file = project_dir / ENV_FILE
        self.environ = os.environ if environ is None else environ

    # -- reading --------------------------------------------------------------------------------

    def _values(self) -> dict[str, str]:
        return read_env_file(self.env_file)

    def _file_of(self, name: str, values: Mapping[str, str]) -> Path | None:
        """The file holding ``name`` when it comes from ``NAME_FILE`` (and not from ``NAME``)."""
        if values.get(name) or not values.get(f"{name}_FILE"):
            return None
        path = Path(values[f"{name}_FILE"]).expanduser()
        return path if path.is_absolute() else self.project_dir / path

    def _read(self, name: str, suffix: str) -> str | None:
        values = self._values()
        path = self._file_of(name, values)
        if path is None:
            return values.get(name + suffix) or None
        target = _sibling(path, suffix) if suffix else path
        try:
            return target.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(name, f"cannot read {target}: {exc.strerror}") from None

    def current(self, name: str) -> str | None:
        return self._read(name, "")

    def staged(self, name: str) -> str | None:
        return self._read(name, NEXT)

    def retired(self, name: str) -> str | None:
        return self._read(name, RETIRED)

    def plain(self, name: str) -> str:
        """A non-secret value of ``.env`` (empty when absent)."""
        return self._values().get(name, "")

    def check_rotatable(self, names: Iterable[str]) -> None:
        for name in names:
            for key in (name, f"{name}_FILE"):
                if key in self.environ:
                    raise ConfigError(
                        key,
                        "is set in the environment of this command, which overrides .env: a rotation "
                        "would write a new value that nothing reads",
                        hint=f"unset {key} and keep it in .env (or in the file {name}_FILE names there); "
                        "services started with it in their environment must be restarted without it",
                    )

    # -- writing --------------------------------------------------------------------------------

    def stage(self, new_values: Mapping[str, str]) -> None:
        """Stage new values for secrets that have none staged yet (a staged one is kept: it may
        already be in use on a server, and a rerun must apply the same value)."""
        values = self._values()
        env_updates: dict[str, str] = {}
        for name, value in new_values.items():
            path = self._file_of(name, values)
            if path is None:
                if not values.get(name + NEXT):
                    env_updates[name + NEXT] = value
                continue
            if not _sibling(path, NEXT).exists():
                write_private_file(_sibling(path, NEXT), value + "\n")
            # Named in .env after the file exists (a rerun adds a name a crash left out).
            staged_name = str(_sibling(Path(values[name + "_FILE"]), NEXT))
            if values.get(name + NEXT + "_FILE") != staged_name:
                env_updates[name + NEXT + "_FILE"] = staged_name
        if env_updates:
            self._write_env(values, env_updates)

    def swap(self, name: str, *, extra: Mapping[str, str] | None = None, keep_old: bool = True) -> bool:
        """Make the staged value of ``name`` the one in use, keeping the old one as retired (when
        ``keep_old``), and set the plain keys ``extra`` in the same ``.env`` write. Returns False
        when nothing was staged (already swapped by an earlier run): nothing is written then."""
        values = self._values()
        path = self._file_of(name, values)
        updates: dict[str, str] = dict(extra or {})
        if path is None:
            new = values.get(name + NEXT)
            if not new:
                return False
            if keep_old and values.get(name):
                updates[name + RETIRED] = values[name]
            updates[name] = new
            self._write_env(values, updates, drop=(name + NEXT,))
            return True
        staged_file = _sibling(path, NEXT)
        if not staged_file.exists():
            return False
        # Old value aside and .env (plain keys, staged file no longer named) first, the swap itself
        # last: a crash in between leaves the staged file in place, so a rerun does all of it again
        # with the same values.
        if keep_old and path.exists() and not _sibling(path, RETIRED).exists():
            write_private_file(_sibling(path, RETIRED), path.read_text(encoding="utf-8"))
        self._write_env(values, updates, drop=(name + NEXT, name + NEXT + "_FILE"))
        write_private_file(path, staged_file.read_text(encoding="utf-8"))
        staged_file.unlink()
        return True

    def set_plain(self, updates: Mapping[str, str], *, drop: Iterable[str] = ()) -> None:
        """Set (or, in ``drop``, remove) keys of ``.env`` in one atomic write."""
        self._write_env(self._values(), updates, drop=tuple(drop))

    def forget_retired(self, names: Iterable[str]) -> None:
        """Drop the retired values once the servers are known to refuse them."""
        values = self._values()
        drop = []
        for name in names:
            path = self._file_of(name, values)
            if path is None:
                if name + RETIRED in values:
                    drop.append(name + RETIRED)
            else:
                _sibling(path, RETIRED).unlink(missing_ok=True)
        if drop:
            self._write_env(values, {}, drop=tuple(drop))

    def _write_env(self, values: dict[str, str], updates: Mapping[str, str], drop: tuple[str, ...] = ()) -> None:
        merged = {k: v for k, v in values.items() if k not in drop}
        merged.update(updates)
        write_private_file(self.env_file, render_env_file(merged))


def values_in_play(settings: Settings, name: str) -> list[str]:
    """The value of secret ``name`` in use plus, while its rotation is half done, the staged and
    retired ones (each once, in that order): what a server must accept so that every process
    keeps working whichever value it holds."""
    found: list[str | None] = [settings.secret(name)]
    if settings.project_dir is not None:
        store = SecretStore(settings.project_dir)
        found += [store.staged(name), store.retired(name)]
    return list(dict.fromkeys(value for value in found if value))


def redis_passwords_in_play(settings: Settings) -> list[str]:
    """The passwords the Redis ACL user accepts: a Redis restart in the middle of a rotation
    keeps every process that holds either connected (the local runtime writes ``redis.conf``
    from these)."""
    return values_in_play(settings, "REDIS_PASSWORD")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + "." + suffix.strip("_").lower())
