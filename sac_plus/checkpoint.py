"""Writing checkpoints so that a failed or interrupted save never replaces a good file with a partial one."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator


def destination(path: str | os.PathLike, suffix: str) -> pathlib.Path:
    """The file SB3 would write for ``path``: ``suffix`` is appended when the path has none (SB3's rule)."""
    target = pathlib.Path(path)
    if target.suffix == "":
        target = pathlib.Path(f"{target}.{suffix}")
    return target


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike, suffix: str) -> Iterator[str]:
    """
    Yield a temporary path beside the destination; on success, move it over the destination in one
    ``os.replace`` (atomic on POSIX and Windows), on any failure delete it and leave the destination untouched.

    :param path: where the file should end up (``suffix`` is appended when it has none, as SB3 does)
    :param suffix: file extension without dot, e.g. ``"zip"`` or ``"pkl"``
    """
    target = destination(path, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".partial.{suffix}")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
