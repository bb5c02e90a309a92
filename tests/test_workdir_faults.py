"""Faults around a workdir: a second run, another model, a failed save, a
corrupt checkpoint.

* `checkpoints.workdir_lock`: a second process cannot take a workdir that a
  live process holds (the message names the holder's PID), a holder killed
  with SIGKILL leaves nothing that blocks, a second hold in the holding
  process is refused too, and the start-up of every run
  (`startup.started`, `main.run`) takes it before anything is written;
* a config whose model contradicts `<workdir>/config.json` of a workdir with
  checkpoints stops every mode with one ConfigError line naming the field
  (`main` exits 2 with it, no traceback); evaluation-time choices may differ;
* `Checkpointer.save`: a save that fails (a full disk) raises one
  `CheckpointSaveError` naming the step folder and the cause, and the earlier
  checkpoints still restore;
* `Checkpointer.restore`: a truncated or deleted file in the latest
  checkpoint falls back to the previous step with one warning;
* `MetricsWriter.drop_after`: a resumed run's metrics.jsonl holds every step
  once.
"""

import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ki2hoi_jax.config_lib import base
from configs import demo
from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.checkpoints import workdir_lock
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.train import metrics_writer
from ki2hoi_jax.train import startup

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLDER = textwrap.dedent("""
    import sys, time
    from ki2hoi_jax.checkpoints import workdir_lock
    workdir_lock.acquire(sys.argv[1], "train")
    print("LOCKED", flush=True)
    time.sleep(600)
""")


def _is_locked(workdir) -> bool:
  """Whether some open file description holds the workdir's flock."""
  with open(workdir_lock.lock_path(str(workdir)), "a") as f:
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


@pytest.fixture
def holder(tmp_path):
  """A child process holding the lock of tmp_path/'work'; SIGKILL it with
  `holder.send_signal`, it is killed at the end anyway."""
  work = tmp_path / "work"
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep +
             os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work)],
                          cwd=_REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  line = proc.stdout.readline()
  assert line.strip() == "LOCKED", line + proc.stdout.read()
  proc.work = work
  yield proc
  if proc.poll() is None:
    proc.kill()
  proc.wait()
  proc.stdout.close()


def test_second_process_is_refused_and_a_killed_holder_blocks_nothing(
    holder):
  work = holder.work
  with pytest.raises(workdir_lock.WorkdirLockedError) as info:
    workdir_lock.acquire(str(work), "train")
  message = str(info.value)
  assert f"is in use by PID {holder.pid} on host " in message, message
  assert ", started 20" in message and "(train: " in message, message
  assert str(work) in message and "\n" not in message
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  # The killed holder's record is still in the file, but not its lock.
  assert f'"pid": {holder.pid}' in (work / ".lock").read_text()
  with workdir_lock.hold(str(work), "train"):
    assert f'"pid": {os.getpid()}' in (work / ".lock").read_text()
  assert not _is_locked(work)
  assert (work / ".lock").read_text() == ""


def test_a_second_hold_in_the_holding_process_is_refused(tmp_path):
  with workdir_lock.hold(str(tmp_path), "all"):
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f"PID {os.getpid()} .*\\(all: "):
      with workdir_lock.hold(str(tmp_path / "." / ""), "train"):  # Same dir.
        pass
    assert _is_locked(tmp_path)  # The first hold still has it.
  assert not _is_locked(tmp_path)


def _enter(context):
  with context:
    pass


def test_startup_and_main_stop_before_writing_a_held_workdir(
    holder, monkeypatch):
  from ki2hoi_jax import main  # pylint: disable=g-import-not-at-top

  def too_far(*unused_args, **unused_kwargs):
    raise AssertionError("got past the lock")

  # What start-up does after the lock: it fails fast if the lock is missing.
  monkeypatch.setattr(startup, "check_workdir_config", too_far)
  monkeypatch.setattr(startup, "enable_compilation_cache", too_far)
  before = sorted(os.listdir(holder.work))
  for mode in ("train", "eval", "all"):
    config = demo.get_config()
    config.mode = mode
    for call in (lambda: _enter(startup.started(config, str(holder.work))),
                 lambda: main.run(config, str(holder.work))):
      with pytest.raises(workdir_lock.WorkdirLockedError,
                         match=f"PID {holder.pid} "):
        call()
  assert sorted(os.listdir(holder.work)) == before == [".lock"]


def _trained_workdir(workdir):
  """A workdir as training leaves it: config.json and a checkpoint."""
  config = demo.get_config()
  checkpoint_manager.write_config(str(workdir), config)
  ckpt = checkpoint_manager.Checkpointer(str(workdir), keep=1)
  assert ckpt.save(1, _state(1), config)
  ckpt.close()
  return config


_OTHER_MODEL = ("model.d_model is 64 in {}/config.json, 32 given (the "
                "checkpoints beside it hold that model: give the saved value, "
                "or another workdir for another model)")


@pytest.mark.parametrize("mode", ["train", "eval", "predict", "all"])
def test_another_model_in_a_trained_workdir_stops_every_mode(tmp_path, mode):
  from ki2hoi_jax import main  # pylint: disable=g-import-not-at-top
  saved = _trained_workdir(tmp_path)
  before = sorted(os.listdir(tmp_path))
  config = saved.copy_and_resolve_references()
  config.mode = mode
  config.model.d_model = 32
  with pytest.raises(validation.ConfigError) as info:
    main.run(config, str(tmp_path))
  assert str(info.value) == _OTHER_MODEL.format(tmp_path)
  after = sorted(os.listdir(tmp_path))
  if mode != "predict":  # It took the lock, and gave it back.
    after.remove(".lock")
    assert (tmp_path / ".lock").read_text() == ""
  assert after == before
  assert not _is_locked(tmp_path)


def test_saved_config_check_names_every_field_and_allows_eval_choices(
    tmp_path):
  saved = _trained_workdir(tmp_path / "trained")
  config = saved.copy_and_resolve_references()
  config.model.verb_queries = "all_classes"  # How to evaluate: may differ.
  config.model.frozen_dtype = "bfloat16"
  config.dataset.eval_short_side = 160
  config.optimizer.learning_rate = 1e-3
  startup.check_workdir_config(config, str(tmp_path / "trained"))
  config.dataset.zero_shot_split = "rf_uc"
  config.model.clip.text_layers = 3
  with pytest.raises(validation.ConfigError) as info:
    startup.check_workdir_config(config, str(tmp_path / "trained"))
  assert str(info.value).startswith(
      f"dataset.zero_shot_split is 'uv' in {tmp_path}/trained/config.json, "
      "'rf_uc' given; model.clip.text_layers is 2 there, 3 given (")
  # Without a checkpoint the workdir takes any config (training restarts).
  checkpoint_manager.write_config(str(tmp_path / "fresh"), saved)
  startup.check_workdir_config(config, str(tmp_path / "fresh"))


def test_main_reports_another_model_in_one_line(tmp_path):
  _trained_workdir(tmp_path)
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep +
             os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path}", "--config.mode=eval",
       "--config.model.d_model=32"], cwd=_REPO, env=env, capture_output=True,
      text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert lines == ["error: " + _OTHER_MODEL.format(tmp_path)], proc.stderr


def _state(v):
  return {"step": np.array(v, np.int32),
          "params": {"w": np.full(3, v, np.float32),
                     "b": np.full((2, 2), 10 * v, np.float32)},
          "rng": np.array([0, v], np.uint32)}


def _saved(tmp_path, steps=(1, 2, 3)):
  config = base.get_config()
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=3)
  for s in steps:
    assert ckpt.save(s, _state(s), config)
  return ckpt, config


def _tensorstore_enospc():
  """The error orbax raises on a full disk: tensorstore's ValueError text."""
  return ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at '
      'local file ".../state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed '
      'to write 30861 bytes to file 11: No space left on device '
      '[tensorstore_spec=\'{"driver": "zarr"}\']')


def _wrapped_oserror():
  try:
    try:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
      raise RuntimeError("Event loop is closed") from e
  except RuntimeError as e:
    return e


@pytest.mark.parametrize("error", [_tensorstore_enospc, _wrapped_oserror])
def test_failed_save_raises_one_clear_error_and_keeps_the_others(
    tmp_path, monkeypatch, error):
  ckpt, config = _saved(tmp_path, steps=(1, 2))
  tmp = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp"

  def full_disk(step, **unused_kwargs):
    os.makedirs(tmp / "state")  # What orbax leaves behind.
    raise error()

  monkeypatch.setattr(ckpt.latest, "save", full_disk)
  with pytest.raises(checkpoint_manager.CheckpointSaveError) as info:
    ckpt.save(3, _state(3), config)
  message = str(info.value)
  assert message == (
      f"Could not save the checkpoint of step 3 in {tmp_path}/checkpoints/3: "
      "No space left on device (ENOSPC); the checkpoints saved before are "
      "intact (latest: step 2).")
  assert info.value.errno == errno.ENOSPC
  assert not tmp.exists()
  monkeypatch.undo()
  ckpt.close()
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.latest.all_steps() == [1, 2]
  np.testing.assert_array_equal(ckpt.restore(_state(0))["params"]["w"],
                                np.full(3, 2.0))
  ckpt.close()


def _truncate_state_files(step_dir):
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      if name != "_METADATA" and "commit_success" not in name:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)


def _delete_metadata(step_dir):
  os.remove(step_dir / "state" / "_METADATA")


@pytest.mark.parametrize("corrupt", [_truncate_state_files, _delete_metadata])
def test_restore_falls_back_past_a_corrupt_latest_checkpoint(
    tmp_path, caplog, corrupt):
  ckpt, config = _saved(tmp_path)
  ckpt.close()
  folder = tmp_path / "checkpoints" / "3"
  corrupt(folder)
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=3)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(_state(0))
  np.testing.assert_array_equal(restored["params"]["w"], np.full(3, 2.0))
  np.testing.assert_array_equal(restored["params"]["b"], np.full((2, 2), 20))
  assert int(restored["step"]) == 2
  warned = [m for m in caplog.messages if "cannot be restored" in m]
  assert len(warned) == 1, caplog.messages
  assert warned[0].startswith(f"Checkpoint {folder} cannot be restored (")
  assert (f"restored step 2, the newest intact one, instead, and moved the "
          f"unreadable folder to {tmp_path}/checkpoints_corrupt/3.") in warned[0]
  # The unreadable step is out of the way: training saves step 3 again.
  assert (tmp_path / "checkpoints_corrupt" / "3" / "state").is_dir()
  assert ckpt.latest_step() == 2
  assert ckpt.save(3, _state(3), config)
  np.testing.assert_array_equal(ckpt.restore(_state(0))["params"]["w"],
                                np.full(3, 3.0))
  ckpt.close()


def test_restore_without_an_intact_checkpoint_names_the_folders(tmp_path):
  ckpt, _ = _saved(tmp_path, steps=(1, 2))
  ckpt.close()
  for s in (1, 2):
    _delete_metadata(tmp_path / "checkpoints" / str(s))
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=3)
  with pytest.raises(checkpoint_manager.CheckpointError) as info:
    ckpt.restore(_state(0))
  message = str(info.value)
  assert message.startswith(
      f"No checkpoint in {tmp_path}/checkpoints could be restored: "
      f"{tmp_path}/checkpoints/2: FileNotFoundError: ")
  assert f"; {tmp_path}/checkpoints/1: FileNotFoundError: " in message
  # Nothing restored, so nothing was moved aside.
  assert ckpt.latest.all_steps() == [1, 2]
  assert not (tmp_path / "checkpoints_corrupt").exists()
  ckpt.close()


def test_metrics_rows_of_replayed_steps_are_dropped_on_resume(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  w = metrics_writer.MetricsWriter(str(tmp_path))
  for s in (10, 20, 30, 40, 50):
    w.write_scalars(s, {"loss": float(s)})
  w.close()
  with open(path, "a") as f:
    f.write('{"step": 60, "lo')  # A run killed while writing a row.
  w = metrics_writer.MetricsWriter(str(tmp_path))  # Resumed at step 30.
  assert w.drop_after(30) == 3
  for s in (40, 50):
    w.write_scalars(s, {"loss": -float(s)})
  w.close()
  rows = metrics_writer.read_jsonl(path)
  assert [r["step"] for r in rows] == [10, 20, 30, 40, 50]
  assert [r["loss"] for r in rows] == [10.0, 20.0, 30.0, -40.0, -50.0]
  assert not os.path.exists(path + ".tmp")
