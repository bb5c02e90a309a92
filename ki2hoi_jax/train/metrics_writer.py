"""Thin scalar writer: TensorBoard event files plus a JSON-lines copy.

Written by process 0 only (other processes get a writer that does nothing).
Uses TensorBoard's own event-file writer and protos, so neither TensorFlow nor
CLU is imported (docs/contributing.md section 8: CLU pulls TensorFlow onto the GPUs).
`metrics.jsonl` holds one `{"step": s, name: value, ...}` object per call,
which tests and notebooks read without TensorBoard. A resumed run replays the
steps after its checkpoint; `drop_after` removes their old rows first, so the
file holds every step once.
"""

import json
import math
import os
import time
from typing import Mapping, Optional

import jax


class MetricsWriter:
  """Writes scalar summaries of one run.

  Attributes:
    logdir: folder of the event file and metrics.jsonl.
    enabled: False on processes other than 0.
  """

  def __init__(self, logdir: str, enabled: Optional[bool] = None):
    self.logdir = logdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._events = None
    self._jsonl = None
    if self.enabled:
      # pylint: disable=g-import-not-at-top
      from tensorboard.summary.writer import event_file_writer
      os.makedirs(logdir, exist_ok=True)
      self._events = event_file_writer.EventFileWriter(logdir, flush_secs=30)
      self._jsonl = open(self.jsonl_path, "a")

  @property
  def jsonl_path(self) -> str:
    return os.path.join(self.logdir, "metrics.jsonl")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes `scalars` (name -> number) at `step`."""
    if not self.enabled:
      return
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    values = {k: float(v) for k, v in scalars.items()}
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=v)
        for k, v in sorted(values.items())])
    self._events.add_event(event_pb2.Event(wall_time=time.time(),
                                           step=int(step), summary=summary))
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v))
                   for k, v in values.items()})
    self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
    self._jsonl.flush()

  def drop_after(self, step: int) -> int:
    """Removes the metrics.jsonl rows of steps after `step`.

    Called when training resumes at `step`: the steps after it run again and
    write their rows anew. The file is rewritten atomically (a temporary file
    renamed over it); a line that does not parse (the last one of a run
    killed while writing it) goes too. TensorBoard event files are left as
    they are.

    Returns:
      The number of rows removed.
    """
    if not self.enabled:
      return 0
    self._jsonl.close()
    kept, dropped, unterminated = [], 0, False
    with open(self.jsonl_path) as f:
      for line in f:
        if not line.strip():
          continue
        try:
          late = int(json.loads(line).get("step", step)) > step
        except (ValueError, TypeError, AttributeError):
          late = True  # Not a JSON object: a torn last line.
        if late:
          dropped += 1
        else:
          unterminated = not line.endswith("\n")
          kept.append(line.rstrip("\n") + "\n")
    if dropped or unterminated:
      tmp = self.jsonl_path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.jsonl_path)
    self._jsonl = open(self.jsonl_path, "a")
    return dropped

  def flush(self) -> None:
    if self.enabled:
      self._events.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._events.close()
      self._jsonl.close()
      self.enabled = False


def read_jsonl(path: str):
  """Records of a metrics.jsonl file, in order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
