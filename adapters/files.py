"""Files vault writes for others to read (reports, metrics, checkpoints, backups): written whole,
then renamed into place, so a reader (node_exporter, a web server, a backup job) never sees half.

An output path never replaces what vault did not write: an existing file is replaced only if it
is the same kind of file vault wrote there before (it carries vault's own header), or when the
admin says so (`--force`). A symbolic link, a directory, a device, a pipe or a socket is never
written to, whatever the admin says. The check is made once before the work starts and again
just before the rename; the rename itself never follows a link in the final component.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable

from adapters.errors import AdapterError
from domain.errors import BadInput

HEAD_BYTES = 4096

# (path, its first HEAD_BYTES bytes) -> whether vault wrote that file
Recogniser = Callable[[str, bytes], bool]


class OutputFailed(BadInput, AdapterError):
    """An output file could not be written (missing directory, no permission, disk full)."""


class OutputRefused(OutputFailed):
    """An output path vault will not write to: a file vault did not write (without --force), a
    symbolic link, a directory or a device."""


class InputUnreadable(BadInput, AdapterError):
    """An input file could not be read (missing, no permission)."""


def _host_prefix(kind: str) -> str:
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64]
    return f".vault-{kind}-{host}-"


def temporary_prefix(kind: str) -> str:
    """The name prefix of a temporary file or directory this process makes (`kind`: "file",
    "backup", "restore"): it names the host and the process, so that one left behind by a
    process that was killed (kill -9, a power cut) is recognised and removed by the next run
    (`remove_abandoned`), and never one a live process (of any host) is still writing."""
    return f"{_host_prefix(kind)}{os.getpid()}-"


def remove_abandoned(directory: str | os.PathLike[str], kind: str) -> list[str]:
    """Remove the temporary copies of `kind` in `directory` that a process of this host, now
    dead, left behind (a backup's holds the whole vault, still encrypted). Returns their names."""
    host_prefix = _host_prefix(kind)
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = re.fullmatch(r"(\d+)-.*", name[len(host_prefix):]) \
            if name.startswith(host_prefix) else None
        if match is None or _alive(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if os.lstat(path).st_uid != os.geteuid():
                continue
        except OSError:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def starts_with(marker: bytes) -> Recogniser:
    """A file vault wrote is one that starts with `marker` (its header line)."""
    return lambda path, head: head.startswith(marker)


def check_output(path: str | os.PathLike[str], *, what: str = "file",
                 written_by_vault: Recogniser | None = None, force: bool = False) -> None:
    """Refuse (OutputRefused) a path vault must not write `what` to. Nothing there, or a regular
    file that vault wrote (or `force`), passes."""
    name = os.fspath(path)
    try:
        info = os.lstat(name)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputFailed(f"cannot write {name}: {e.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise OutputRefused(f"{name} is a symbolic link: vault does not write through one "
                            "(give the path it points to, if that is meant)")
    if stat.S_ISDIR(info.st_mode):
        raise OutputRefused(f"{name} is a directory: give a file name")
    if not stat.S_ISREG(info.st_mode):
        raise OutputRefused(f"{name} is a device, pipe or socket, not a file: vault writes only "
                            "regular files")
    if force:
        return
    if written_by_vault is not None and written_by_vault(name, _head(name, info)):
        return
    raise OutputRefused(
        f"{name} already exists and is not a {what} vault wrote: give --force to replace it, "
        "or another name" if written_by_vault is not None else
        f"{name} already exists: give --force to replace it, or another name")


def _head(name: str, info: os.stat_result) -> bytes:
    """The first bytes of the regular file `info` describes, or b"" if it changed meanwhile."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(name, flags)
    except OSError:
        return b""  # swapped for a link, removed, unreadable: not recognised
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (info.st_dev,
                                                                          info.st_ino):
            return b""
        return os.read(fd, HEAD_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)


def replace_checked(source: str | os.PathLike[str], path: str | os.PathLike[str], *,
                    what: str = "file", written_by_vault: Recogniser | None = None,
                    force: bool = False) -> None:
    """Rename `source` (in the same directory) over `path`, checking `path` once more first."""
    check_output(path, what=what, written_by_vault=written_by_vault, force=force)
    os.replace(source, path)


def write_atomically(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o600, *,
                     what: str = "file", written_by_vault: Recogniser | None = None,
                     force: bool = False) -> None:
    name = os.fspath(path)
    check_output(name, what=what, written_by_vault=written_by_vault, force=force)
    directory = os.path.dirname(os.path.abspath(name))
    remove_abandoned(directory, "file")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=temporary_prefix("file"))
    except OSError as e:
        raise OutputFailed(f"cannot write {name}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        replace_checked(tmp, name, what=what, written_by_vault=written_by_vault, force=force)
    except BaseException as e:  # an interrupt too: no half-written .vault-* file stays behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputFailed(f"cannot write {name}: {e.strerror}") from None
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
