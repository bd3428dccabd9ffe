"""What a long run meets besides its own computation: another process on its directory, and
the operating system refusing a write (a full disk, a quota, a read-only filesystem, a
permission).

- `RunLock`: one writer per run directory. `run.train` takes an OS file lock
  (`fcntl.flock`) on `RUN_DIR/run.lock` before it reads or writes anything of the run; the
  kernel drops it when the process ends, however it ends (SIGKILL included), so a killed run
  never blocks the next `aes-rl resume`. A second process is refused in one line naming the
  pid that holds the lock (`RunBusy`, exit status `EXIT_BUSY`). A run over several processes
  takes it once, in process 0.
- `StorageError`: an OS-level error met while a run reads or writes its directory, as one
  line (the path, the cause, what to do) and an exit status per cause (`EXIT_STATUS`). Every
  file of a run is written to a temporary name and renamed into place (orbax's checkpoints
  included), so the last complete checkpoint is intact and `aes-rl resume` continues from it
  once the cause is gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import warnings
from pathlib import Path

LOCK_NAME = "run.lock"

EXIT_BUSY = 4  # another process is running in the run directory
# An OS-level error while the run writes (or reads) its directory: a status per cause.
EXIT_NO_SPACE = 5  # ENOSPC
EXIT_QUOTA = 6  # EDQUOT
EXIT_READ_ONLY = 7  # EROFS
EXIT_PERMISSION = 8  # EACCES, EPERM
EXIT_OS_ERROR = 9  # any other OS error (EIO, ...)

# errno -> (exit status, what to do)
_CAUSES = {
    errno.ENOSPC: (EXIT_NO_SPACE, "free space on its filesystem"),
    errno.EDQUOT: (EXIT_QUOTA, "free space within your disk quota (or raise the quota)"),
    errno.EROFS: (EXIT_READ_ONLY, "remount the filesystem read-write (or copy the run to one)"),
    errno.EACCES: (EXIT_PERMISSION, "give this user write permission on it"),
    errno.EPERM: (EXIT_PERMISSION, "give this user write permission on it"),
}
# The causes a user fixes outside the run: never taken for a corrupt checkpoint.
ENVIRONMENT_ERRNOS = frozenset(_CAUSES)


class RunBusy(RuntimeError):
    """Another process holds the run directory's lock."""

    status = EXIT_BUSY


class StorageError(RuntimeError):
    """An OS-level error met while a run writes its directory (one line; `status`: the CLI's
    exit status)."""

    def __init__(self, message: str, status: int, errno_: int | None = None):
        super().__init__(message)
        self.status, self.errno = status, errno_


# ------------------------------------------------------------------ one writer


class RunLock:
    """An exclusive `fcntl.flock` on `RUN_DIR/run.lock`, held until `release` (or the
    process's end). The file holds the holder's pid, for the refusal's message; it is never
    deleted (a process that opened it must lock the same file as the next one)."""

    def __init__(self, fd: int | None, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = Path(run_dir) / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            stop = f"kill {holder}" if holder.isdigit() else "stop it"
            raise RunBusy(
                f"run_dir: {run_dir} has a run in progress ({who} holds {path}); wait for it "
                f"to finish or stop it ({stop}), then `aes-rl resume {run_dir}`"
            ) from None
        except OSError as err:  # a filesystem without locks: run, but say so
            os.close(fd)
            warnings.warn(
                f"run_dir: cannot lock {path} ({err.strerror or err}); a second run on "
                f"{run_dir} would not be refused",
                stacklevel=2,
            )
            return cls(None, path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = None


# ------------------------------------------------------------------ OS-level errors

_TS_ERRNO = re.compile(r"os_error_code='?(\d+)")  # tensorstore: "... [os_error_code='28']"
_TS_PATH = re.compile(r'(?:Failed writing|Failed reading|local file|Error opening)[:\s]*"([^"]+)"')


def os_error(err: BaseException) -> tuple[int, str | None] | None:
    """(errno, path or None) of the OS-level error behind `err` (an OSError, or orbax's
    tensorstore error that carries an `os_error_code`), following its chain; else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno, err.filename
        match = _TS_ERRNO.search(str(err))
        if match:
            paths = _TS_PATH.findall(str(err))
            return int(match.group(1)), (paths[-1] if paths else None)
        err = err.__cause__ or err.__context__
    return None


def is_environment_error(err: BaseException) -> bool:
    """Behind `err`: a full disk, a quota, a read-only filesystem or a permission (a cause
    outside the run, never a corrupt file)."""
    found = os_error(err)
    return found is not None and found[0] in ENVIRONMENT_ERRNOS


def last_checkpoint(run_dir: Path) -> int | None:
    """The newest complete checkpoint of a run directory (orbax renames a step's directory to
    its number only when it is complete), or None."""
    try:
        steps = [int(p.name) for p in (Path(run_dir) / "checkpoints").iterdir() if p.name.isdigit()]
    except OSError:
        return None
    return max(steps) if steps else None


def storage_error(err: BaseException, run_dir: Path) -> StorageError | None:
    """`err` as a one-line StorageError if an OS-level error is behind it, else None."""
    found = os_error(err)
    if found is None:
        return None
    code, path = found
    direct = isinstance(err, OSError) or _TS_ERRNO.search(str(err)) is not None
    if code not in ENVIRONMENT_ERRNOS and not direct:
        return None  # another error raised while one was handled: not an OS-level fault
    status, todo = _CAUSES.get(code, (EXIT_OS_ERROR, "fix the cause"))
    name = errno.errorcode.get(code, str(code))
    cause = os.strerror(code).lower()
    last = last_checkpoint(run_dir)
    kept = (
        f"the last checkpoint (chunk {last}) is intact"
        if last is not None
        else "no checkpoint was complete yet"
    )
    then = "continues from it" if last is not None else "starts the run from its beginning"
    return StorageError(
        f"run_dir: {cause} [{name}] at {path or run_dir}; {kept}; {todo}, then "
        f"`aes-rl resume {run_dir}` {then}",
        status,
        code,
    )


def plain_error(err: OSError) -> StorageError:
    """An OSError met outside a run's writes (reading a run, writing a plot) as one line."""
    code = err.errno if err.errno is not None else -1
    status, todo = _CAUSES.get(code, (EXIT_OS_ERROR, "fix the cause"))
    name = errno.errorcode.get(code, "OSError")
    cause = (err.strerror or str(err)).lower()
    where = f" at {err.filename}" if err.filename else ""
    return StorageError(f"{cause} [{name}]{where}; {todo}", status, err.errno)
