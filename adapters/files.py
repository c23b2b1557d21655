"""Files vault writes for others to read (reports, metrics, checkpoints): written whole, then
renamed into place, so a reader (node_exporter, a web server, a backup job) never sees half."""

from __future__ import annotations

import contextlib
import os
import tempfile

from adapters.errors import AdapterError


class OutputFailed(AdapterError):
    """An output file could not be written (missing directory, no permission, disk full)."""


class InputUnreadable(AdapterError):
    """An input file could not be read (missing, no permission)."""


def write_atomically(path: str, data: str | bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vault-")
    except OSError as e:
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # an interrupt too: no half-written .vault-* file stays behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename durable: without it a crash can bring back the previous file (for a
    checkpoint, an older one, which would hide a rollback)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some file systems cannot open a directory; the rename itself has happened
    try:
        os.fsync(fd)
    except OSError:
        pass  # fsync on a directory is refused by some file systems
    finally:
        os.close(fd)
