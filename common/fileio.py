"""File I/O shared by every stage: JSON objects read with one-line errors, and atomic outputs.

Every output is written under a temporary name beside its target, `.NAME.<pid>.<random>.tmp`, then
renamed into place: a failure, Ctrl-C or SIGTERM part-way leaves the target as it was and nothing behind.
The writer holds an advisory lock (flock) on its temporary while it lives; after a SIGKILL or a power cut
the lock is gone with the process, and the next write to the same target removes the stale temporary
(owner pid not running, lock free).

Commit: without `overwrite`, the final rename fails when the target appeared (non-empty) meanwhile, so
of two concurrent writers the later one gets an error instead of silently replacing the other's output.
With `overwrite`, the old target is swapped out atomically (renameat2 RENAME_EXCHANGE where the kernel and
file system have it; two renames otherwise) and is replaced only if this tool wrote it
(paths.written_by_this_tool). Files and directories get the modes the umask gives (some libraries write
0600 files through their own temporaries).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import MixtralTrtError, WriteError
from .interrupts import deferred
from .paths import check_output_dir, written_by_this_tool


def read_json_object(path: Path, error: type[MixtralTrtError] = MixtralTrtError) -> dict:
    """The JSON object in `path`; `error` (one line naming the file) when it is not valid JSON or not an object."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data


# ---- temporaries ------------------------------------------------------------------------------------
def temporary_name(target: Path) -> str:
    return f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _temporary_pattern(target: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _lock(fd: int) -> bool:
    """Take the temporary's lock without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # no flock on this file system: the pid check alone decides
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporaries of `target` whose writer died (SIGKILL, power cut); returns what it removed.

    Stale means: the pid in the name is not running, and nobody holds the lock (a live writer in another
    pid namespace still does; a reused pid keeps a temporary, which errs on the safe side)."""
    target = Path(target)
    pattern = _temporary_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _running(int(match.group(1))):
            continue
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _create_temporary(target: Path, directory: bool) -> tuple[Path, int]:
    """A new locked temporary beside `target` (created with mode 0777/0666 minus the umask): (path, fd)."""
    for _ in range(100):
        path = target.parent / temporary_name(target)
        try:
            if directory:
                os.mkdir(path, 0o777)
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        _lock(fd)
        return path, fd
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(root: Path) -> None:
    """Give `root` and everything below it the mode a plain mkdir / open would have given."""
    mask = _umask()
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, (0o777 if mode & 0o111 else 0o666) & ~mask)


# ---- commit -----------------------------------------------------------------------------------------
RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 / not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _commit(tmp: Path, target: Path, overwrite: bool, replaceable: Callable[[Path], bool]) -> Path | None:
    """Rename `tmp` to `target`; returns where the old target now is (to delete), if one was replaced."""
    try:
        os.rename(tmp, target)  # atomic; fails when target is a non-empty directory
        return None
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
    if not overwrite:
        raise MixtralTrtError(f"{target}: another process wrote it while this one was working; it is left as "
                              "that process wrote it and this run wrote nothing (pass --force to replace it)")
    _check_target(target, overwrite, replaceable)
    if _exchange(tmp, target):
        return tmp
    aside = target.parent / temporary_name(target)
    os.rename(target, aside)
    os.rename(tmp, target)
    return aside


def _check_target(target: Path, overwrite: bool, replaceable: Callable[[Path], bool]) -> None:
    if not target.name or target.name in (".", ".."):
        raise MixtralTrtError(f"{target}: not a name for a new directory; give a new directory")
    if target.is_symlink():
        raise MixtralTrtError(f"{target}: is a symbolic link; give the directory itself")
    if target.exists() and not target.is_dir():
        raise MixtralTrtError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise MixtralTrtError(f"{target}: exists and is not empty (pass --force to replace it)")
        if not replaceable(target):
            raise MixtralTrtError(f"{target}: not a directory mixtral-export wrote (no graph.json, manifest.json "
                                  "or checkpoint of ours): --force replaces only those; remove it yourself or "
                                  "choose another directory")


def check_output(target: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 replaceable: Callable[[Path], bool] = written_by_this_tool) -> Path:
    """Every check atomic_dir makes before writing (paths.check_output_dir, then what `target` holds): call it
    before a long computation so that a refused output is reported at once."""
    target = check_output_dir(target, inputs)
    _check_target(target, overwrite, replaceable)
    return target


def _write_error(e: OSError, tmp: Path, target: Path) -> WriteError:
    where = str(e.filename or target).replace(str(tmp), str(target))  # name the file as it would have been
    return WriteError(f"{where}: {e.strerror or e}; {target} is unchanged")


def _begin(target: Path, directory: bool) -> tuple[Path, int]:
    """The parent made, stale temporaries of `target` removed, and a new locked temporary beside it; an OSError
    on the way is a WriteError naming the path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        return _create_temporary(target, directory=directory)
    except OSError as e:
        raise WriteError(f"{e.filename or target.parent}: {e.strerror or e}; cannot write {target}") from None


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = (),
               replaceable: Callable[[Path], bool] = written_by_this_tool) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `target` when the block succeeds.

    `target` must pass paths.check_output_dir against `inputs`; a non-empty `target` needs `overwrite`, and
    is replaced only if `replaceable(target)` (by default: this tool wrote it). An OSError in the block
    (disk full, read-only file system) becomes a WriteError (the CLI's exit code 1)."""
    target = check_output(target, inputs, overwrite, replaceable)
    tmp, fd = None, -1
    try:
        with deferred():  # a signal between creating the temporary and knowing its name would leave it behind
            tmp, fd = _begin(target, directory=True)
        try:
            yield tmp
            _follow_umask(tmp)
            with deferred():  # committed, then the swapped-out old target removed: never half of that
                old = _commit(tmp, target, overwrite, replaceable)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            raise _write_error(e, tmp, target) from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary file beside `target`; it replaces `target` when the block succeeds."""
    target = Path(target)
    if target.is_dir():
        raise MixtralTrtError(f"{target}: is a directory; give a file name")
    tmp, fd = None, -1
    try:
        with deferred():
            tmp, fd = _begin(target, directory=False)
        try:
            with os.fdopen(os.dup(fd), mode) as f:
                yield f
            os.replace(tmp, target)
        except OSError as e:
            raise _write_error(e, tmp, target) from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
