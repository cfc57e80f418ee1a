"""Secrets read from files: a database URL with its password, a TSIG key, a hook secret.

On the command line a secret shows in `ps` and shell history; a file (mode 0600, or a
systemd credential, or a container secret) does not. Every `--...-file` flag reads its
file through here, so they all fail the same way: a ConfigError naming the flag.
"""

from __future__ import annotations

from pathlib import Path

from shadowdns.errors import ConfigError, Problem


def read_secret_file(path: str | Path, option: str) -> str:
    """The first non-empty line of `path`, stripped; a ConfigError naming `option`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(option, None, f"cannot read {path}: {exc}")]) from None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise ConfigError([Problem(option, None, f"{path} is empty")])
