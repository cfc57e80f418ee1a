"""Temporary files that stage writes into the zones directory, and their removal at start.

Every writer of the zones directory (the API's `ConfigFiles`, a fleet node mirroring the
store) writes new content to a hidden ``.<name>.<random>.tmp`` beside its target and renames
it into place, so a reader never sees half a file. A `kill -9` between the write and the
rename leaves that temporary behind; `remove_stale` deletes such files when `serve` starts,
before anything else writes there. Only hidden regular files with the ``.tmp`` suffix are
touched: zone and policy files, symbolic links and directories never are.
"""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def temp_name(target: Path, tag: str | None = None) -> Path:
    """A fresh hidden temporary beside `target` (``.<name>.<tag or random>.tmp``)."""
    return target.with_name(f"{TMP_PREFIX}{target.name}.{tag or secrets.token_hex(4)}"
                            f"{TMP_SUFFIX}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(TMP_PREFIX) and path.name.endswith(TMP_SUFFIX)


def remove_stale(directory: Path) -> list[Path]:
    """Delete the temporaries an interrupted write left in `directory`; what was removed."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not is_temp(path):
            continue
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove the stale temporary file %s: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s: %s",
                 len(removed), directory, " ".join(p.name for p in removed))
    return removed
