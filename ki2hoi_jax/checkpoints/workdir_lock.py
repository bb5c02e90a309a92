"""One writer per workdir: an exclusive lock on `<workdir>/.lock`.

Two runs in one workdir overwrite each other's checkpoints, best checkpoint
and `config.json`, so a run that writes a workdir holds this lock for as long
as it runs: `train.startup.started` takes it once, for the modes train, eval
and all (so 'all' holds it from training through prediction). A second run
stops at once with `WorkdirLockedError`, whose message names the holder (PID,
host, start time, what it runs); so does a second `acquire` in the process
that holds the lock (the lock is not re-entrant).

The lock is `fcntl.flock` on an open file descriptor, kept open for the life
of the holder. The kernel drops it when that process ends, however it ends
(SIGKILL included), so a lock left by a killed run never blocks the next one;
the file's text (pid, host, start time) is only there for the message and is
emptied when the lock is released. On NFS, Linux emulates flock with
byte-range locks that other clients see; a file system that supports no
locking at all gets a warning and no lock.

Multi-host runs: only process 0 writes the workdir, so only process 0 takes
the lock (the others share its file system); `hold` must run after
`jax.distributed.initialize`.

Prediction (`mode=predict`, `inference.predict`) is not locked: it only reads
checkpoints and writes `predictions/` (or its `--out`), so it may run beside
the training run of its workdir.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from typing import IO, Any, Dict, Iterator, Optional

from absl import logging
import jax

LOCK_NAME = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir's lock."""


# realpath of a workdir this process holds -> its open lock file (None: the
# file system has no locking).
_HELD: Dict[str, Optional[IO[str]]] = {}


def lock_path(workdir: str) -> str:
  return os.path.join(os.path.realpath(workdir), LOCK_NAME)


def _read_holder(f, wait_s: float = 1.0) -> Optional[Dict[str, Any]]:
  """The holder's record; waits a moment for one that has just locked."""
  deadline = time.monotonic() + wait_s
  while True:
    f.seek(0)
    try:
      return json.loads(f.read())
    except ValueError:
      if time.monotonic() > deadline:
        return None
      time.sleep(0.05)


def _describe(holder: Optional[Dict[str, Any]]) -> str:
  if not holder:
    return "another process (it has not written its PID yet)"
  return (f"PID {holder.get('pid')} on host {holder.get('host')}, started "
          f"{holder.get('started')} ({holder.get('purpose')}: "
          f"{holder.get('command')})")


def acquire(workdir: str, purpose: str) -> None:
  """Takes the lock of `workdir` (created if missing) for this process.

  Args:
    workdir: the run folder.
    purpose: what this process runs (e.g. 'train'), shown to a second run.

  Raises:
    WorkdirLockedError: another process, or this one, holds it.
  """
  key = os.path.realpath(workdir)
  os.makedirs(key, exist_ok=True)
  path = os.path.join(key, LOCK_NAME)
  f = open(path, "a+")  # Not "w": the holder's record must survive.
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _read_holder(f)
    f.close()
    raise WorkdirLockedError(
        f"Workdir {key} is in use by {_describe(holder)}. Two runs in one "
        "workdir overwrite each other's checkpoints and config.json: wait "
        "for that run to end, stop it, or use another --workdir (the lock "
        f"{path} is released when that process ends).") from None
  except OSError as e:  # ENOLCK, EOPNOTSUPP: no locking on this file system.
    f.close()
    logging.warning("Cannot lock %s (%s); running without the check that "
                    "no other run writes this workdir.", path, e)
    _HELD[key] = None
    return
  f.seek(0)
  f.truncate()
  f.write(json.dumps({
      "pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
      "started": datetime.datetime.now().astimezone().isoformat(
          timespec="seconds"),
      "command": " ".join(sys.argv)[:300]}))
  f.flush()
  _HELD[key] = f


def release(workdir: str) -> None:
  """Unlocks `workdir` if this process holds it."""
  f = _HELD.pop(os.path.realpath(workdir), None)
  if f is not None:
    f.truncate(0)
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()


@contextlib.contextmanager
def hold(workdir: str, purpose: str) -> Iterator[None]:
  """`acquire` ... `release` on process 0; nothing on the other processes."""
  if jax.process_index() != 0:
    yield
    return
  acquire(workdir, purpose)
  try:
    yield
  finally:
    release(workdir)
