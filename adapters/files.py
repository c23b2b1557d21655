"""Files vault writes for others to read (reports, metrics, checkpoints): written whole, then
renamed into place, so a reader (node_exporter, a web server, a backup job) never sees half."""

from __future__ import annotations

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
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
