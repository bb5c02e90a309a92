"""Tests of the training loop (train/trainer.py), checkpoints and the writer.

The end-to-end tests run `train_and_evaluate` in subprocesses, started as
every run is (`startup.started`), with 2 fake CPU devices each and XLA
optimisations off to cut compile time, on a tiny variant of configs/demo.py
with the synthetic dataset generated in the workdir:

* a run killed with SIGKILL after a checkpoint and restarted in the same
  workdir logs exactly the losses of an uninterrupted run, ends with the same
  parameters, and the loss falls;
* a non-finite loss stops the run with FloatingPointError before any later
  checkpoint is written;
* two processes joined by `jax.distributed` (coordinator on localhost) train
  two steps and end with identical parameters.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import demo_utils  # tests/ is on sys.path (pytest rootdir conftest).
from ki2hoi_jax.config_lib import base
from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.train import eval_hook
from ki2hoi_jax.train import metrics_writer
from ki2hoi_jax.train import run_setup
from ki2hoi_jax.train import trainer

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny model of configs/demo.py, run small, for the subprocess runs.
_TINY = {
    "dataset.synthetic_num_train": 16,
    "dataset.synthetic_num_test": 4,
    "batch_size": 4,
    "eval_batch_size": 4,
    **demo_utils.TINY_MODEL,
    "log_every_steps": 1,
    "progress_bar": False,
    "inference.clip_pair_fusion": 0.0,  # Random CLIP (demo_utils).
}

_SCRIPT = textwrap.dedent("""
    import json, sys
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from configs import demo
    from ki2hoi_jax.train import startup
    from ki2hoi_jax.train import trainer
    config = demo.get_config()
    for key, value in json.loads(sys.argv[2]).items():
      node = config
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = tuple(value) if isinstance(value, list) else value
    if len(sys.argv) > 3 and sys.argv[3] == "eval":
      with startup.started(config, sys.argv[1]):
        metrics = trainer.evaluate(config, sys.argv[1])
      print("RESULT " + json.dumps({"summary": metrics["summary"],
                                    "step": metrics["step"]}), flush=True)
      sys.exit(0)
    with startup.started(config, sys.argv[1]):
      result = trainer.train_and_evaluate(config, sys.argv[1])
    summary = (result["eval"] or {}).get("summary")
    print("RESULT " + json.dumps({"step": result["step"],
                                  "checksum": result["params_checksum"],
                                  "summary": summary}), flush=True)
""")


def _env(num_devices=2):
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(num_devices),
             JAX_DISABLE_MOST_OPTIMIZATIONS="1", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=_REPO + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def _start(workdir, overrides, num_devices=2, log=None, mode="train"):
  cfg = dict(_TINY)
  cfg.update(overrides)
  return subprocess.Popen(
      [sys.executable, "-c", _SCRIPT, str(workdir), json.dumps(cfg), mode],
      cwd=_REPO, env=_env(num_devices), stdout=subprocess.PIPE,
      stderr=log or subprocess.STDOUT, text=True)


def _result(proc, timeout=900):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]
  line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def _losses(workdir):
  """Last logged loss of every step."""
  out = {}
  for rec in metrics_writer.read_jsonl(os.path.join(workdir,
                                                    "metrics.jsonl")):
    if "loss" in rec:
      out[rec["step"]] = rec["loss"]
  return out


# ------------------------------------------------------------ fast tests


def test_check_finite_raises_with_step_and_checkpoint(tmp_path):
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=2)
  good = {"loss": np.float32(1.0), "grad_norm": np.float32(2.0)}
  trainer._check_finite([good, good], 0, ckpt)
  bad = {"loss": np.float32(np.nan), "grad_norm": np.float32(1.0)}
  with pytest.raises(FloatingPointError, match=r"loss \(nan\) at training "
                     r"step 4.*no checkpoint"):
    trainer._check_finite([good, bad], 2, ckpt)
  ckpt.save(3, {"step": np.array(3), "w": np.ones(2)}, base.get_config())
  inf = {"loss": np.float32(1.0), "grad_norm": np.float32(np.inf)}
  with pytest.raises(FloatingPointError, match=r"grad_norm.*step 3 in"):
    trainer._check_finite([inf], 3, ckpt)
  ckpt.close()


def test_checkpointer_keeps_latest_and_best(tmp_path):
  config = base.get_config()
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=2)
  state = lambda v: {"step": np.array(v, np.int32),
                     "params": {"w": np.full(3, v, np.float32)},
                     "rng": np.array([0, v], np.uint32)}
  for s in (1, 2, 3):
    assert ckpt.save(s, state(s), config)
  assert not ckpt.save(3, state(3), config)  # Already saved.
  assert ckpt.latest.all_steps() == [2, 3]
  restored = ckpt.restore(state(0))
  np.testing.assert_array_equal(restored["params"]["w"], np.full(3, 3.0))
  np.testing.assert_array_equal(restored["rng"], [0, 3])
  assert ckpt.save_if_best(1, state(1), config, 10.0)
  assert not ckpt.save_if_best(2, state(2), config, 5.0)
  assert ckpt.save_if_best(3, state(3), config, 12.0)
  assert ckpt.best.all_steps() == [3] and ckpt.best_value() == 12.0
  ckpt.close()
  # The best value survives a restart; the config is saved beside.
  ckpt = checkpoint_manager.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.best_value() == 12.0
  assert not ckpt.save_if_best(4, state(4), config, 11.0)
  np.testing.assert_array_equal(
      ckpt.restore(state(0), best=True)["params"]["w"], np.full(3, 3.0))
  ckpt.close()
  with open(tmp_path / "checkpoints" / "3" / "config" / "metadata") as f:
    assert json.load(f)["optimizer"]["learning_rate"] == 1e-4


def test_metrics_writer_writes_tensorboard_and_jsonl(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  w = metrics_writer.MetricsWriter(str(tmp_path))
  w.write_scalars(5, {"loss": 1.5, "lr": 1e-4})
  w.write_scalars(10, {"loss": 0.5, "bad": float("nan")})
  w.close()
  recs = metrics_writer.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert recs[0] == {"step": 5, "loss": 1.5, "lr": 1e-4}
  assert recs[1]["bad"] == "nan"
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  loss = acc.Scalars("loss")
  assert [(e.step, e.value) for e in loss] == [(5, 1.5), (10, 0.5)]
  silent = metrics_writer.MetricsWriter(str(tmp_path / "other"),
                                        enabled=False)
  silent.write_scalars(1, {"x": 1.0})
  assert not os.path.exists(tmp_path / "other")


def test_summarize_eval_headline_and_checksum():
  config = base.get_config()
  config.dataset.zero_shot_split = "uv"
  m = {"default": {"full": 20.0, "rare": None, "non_rare": 21.0},
       "zero_shot": {"full": 20.0, "seen": 22.0, "unseen": 11.0}}
  s = eval_hook.summarize_eval(config, m)
  assert s["eval/mAP"] == 20.0 and s["eval/mAP_unseen"] == 11.0
  assert math.isnan(s["eval/mAP_rare"])
  assert eval_hook.headline(config, m) == (
      "full mAP 20.00 (seen 22.00, unseen 11.00)")
  assert eval_hook.headline(config, None) == "n/a"
  config.dataset.name = "vcoco"
  assert eval_hook.headline(config, {"scenario_1": 31.5, "scenario_2": None}
                            ) == "role AP S1 31.50, S2 n/a"
  a = {"x": {"w": np.zeros(2, np.float32)}}
  b = {"x": {"w": np.array([0.0, 1e-30], np.float32)}}
  assert run_setup.params_checksum(a) != run_setup.params_checksum(b)
  assert run_setup.params_checksum(a) == run_setup.params_checksum(
      {"x": {"w": np.zeros(2, np.float32)}})


# -------------------------------------------------------------- end to end


@pytest.mark.slow
def test_killed_run_resumes_exactly_and_loss_falls(tmp_path):
  steps = {"num_train_steps": 16, "checkpoint_every_steps": 6}
  ref = _result(_start(tmp_path / "ref", steps))
  ref_losses = _losses(tmp_path / "ref")
  assert sorted(ref_losses) == list(range(1, 17))
  # The loss falls (after the first steps, dominated by the random init).
  early = np.mean([ref_losses[s] for s in range(3, 7)])
  late = np.mean([ref_losses[s] for s in range(13, 17)])
  assert late < early, ref_losses
  assert os.path.exists(tmp_path / "ref" / "eval" / "step_16" /
                        "predictions.json")
  with open(tmp_path / "ref" / "eval" / "step_16" / "metrics.json") as f:
    assert "default" in json.load(f)

  work = tmp_path / "killed"
  proc = _start(work, steps, log=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (work / "checkpoints" / "6").is_dir():
    assert proc.poll() is None, "run ended before its first checkpoint"
    assert time.time() < deadline
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = sorted(int(n) for n in os.listdir(work / "checkpoints")
                 if n.isdigit())
  assert saved and saved[-1] < 16, saved  # Killed mid-way.
  resumed = _result(_start(work, steps))
  losses = _losses(work)
  # The rows of the steps replayed after the resume were replaced.
  logged = [r["step"] for r in metrics_writer.read_jsonl(
      os.path.join(work, "metrics.jsonl")) if "loss" in r]
  assert logged == list(range(1, 17)), logged
  assert sorted(losses) == list(range(1, 17))
  for s in range(1, 17):
    np.testing.assert_allclose(losses[s], ref_losses[s], rtol=1e-5,
                               err_msg=f"step {s}")
  assert resumed["step"] == 16
  assert resumed["checksum"] == ref["checksum"]
  # `evaluate` restores the best checkpoint (the step-16 evaluation) and
  # reproduces its numbers.
  proc = _start(work, steps, mode="eval")
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  assert "HICO-DET mAP" in out and "Checkpoint step 16" in out
  again = json.loads([l for l in out.splitlines()
                      if l.startswith("RESULT ")][-1][len("RESULT "):])
  assert again["step"] == 16
  for k, v in resumed["summary"].items():
    np.testing.assert_allclose(again["summary"][k], v, err_msg=k)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  proc = _start(tmp_path, {"num_train_steps": 6, "checkpoint_every_steps": 1,
                           "optimizer.learning_rate": 1e30,
                           "optimizer.backbone_learning_rate": 1e30,
                           "optimizer.grad_clip_norm": 0.0})
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode != 0
  assert "FloatingPointError: Non-finite" in out, out[-3000:]
  losses = _losses(tmp_path)
  bad = [s for s, v in losses.items() if not np.isfinite(float(v))]
  saved = sorted(int(n) for n in os.listdir(tmp_path / "checkpoints")
                 if n.isdigit())
  first_bad = min(bad) if bad else int(out.split("training step ")[1].split(
      ";")[0])
  assert not saved or saved[-1] < first_bad, (saved, first_bad)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_identical_parameters(tmp_path):
  port = _free_port()
  common = {"num_train_steps": 2, "checkpoint_every_steps": 2,
            "batch_size": 2, "eval_batch_size": 2, "distributed": True,
            "coordinator_address": f"127.0.0.1:{port}", "num_processes": 2}
  procs = [_start(tmp_path, dict(common, process_id=i), num_devices=1)
           for i in range(2)]
  results = [_result(p) for p in procs]
  assert results[0]["step"] == results[1]["step"] == 2
  assert results[0]["checksum"] == results[1]["checksum"]
  assert results[0]["summary"] is not None  # Process 0 evaluated.
  assert results[1]["summary"] is None
  assert (tmp_path / "checkpoints" / "2" / "state").is_dir()
  assert sorted(_losses(tmp_path)) == [1, 2]
