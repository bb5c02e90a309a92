r"""Benchmark of one training step: device compute, host matching, parts, floor.

Three modes, all on random inputs of a config's shapes with
`--per_device_batch` images per device (random weights and random unit
text embeddings: the speed does not depend on their values):

* default: the real pmapped train step (model, host matching
  between the step's two programs, losses, optimizer); prints the median
  step time, the host time spent in the matching (summed over devices and
  decoder layers; matching.HOST_TIMER), their difference and the matching
  share, which should stay below 5 %.
* `--breakdown` (paper config, default sizes 640x640 and 800x1200): the
  same step, then the wall time of each part of it, then the floor: a
  PyTorch ResNet-50 forward + backward (benchmarks/torch_resnet.py, no
  torchvision) at the same size and batch with DETR's freezing (stem and
  layer1 without gradients, frozen BN as a fixed affine map),
  `torch.set_num_threads(2)`, its calls alternating with the step's in the
  same run; prints the step as a multiple of the floor.
* `--inference` (paper config, default 640x640): the pmapped eval step
  (model + on-device top-k) per image vs the same-run PyTorch ResNet-50
  forward (no grad) per image.

How the parts are timed (`--breakdown`): one jitted training forward of the
model records, with `flax.linen.intercept_methods`, the inputs of each
top-level submodule (backbone, clip_visual, encoder, instance_interactor,
verb_decoder, interaction_decoder, verb_predictor) and the outputs. Each
submodule is then jitted alone with its own variables and those recorded
inputs, as forward + VJP: a random cotangent on every float output, the
gradient taken w.r.t. the parameters the optimizer trains (the backbone's
layer2..4 only) and w.r.t. those of its inputs that depend on trained
parameters (the recording forward runs under `jax.jvp`, which marks them),
as in the whole step: none for the backbone (the image) and the frozen
CLIP tower (forward only), not the text embeddings nor position encodings. The
losses are timed as forward + VJP w.r.t. the model outputs (they include
the matching callbacks, whose host time is subtracted and shown as its own
line, measured inside the whole step), the optimizer as the jitted
`tx.update` + `apply_updates` with donated state. Everything the parts do
not cover (input_proj, ROI-Align, clip_proj, parameter split/merge, pmean,
what XLA fuses across part boundaries) is the `rest` line: the whole step
minus the sum of the parts. All times are medians over `--num_steps` calls
after `--warmup` untimed ones.

`--breakdown` prints the minor page faults per call of the step and of the
PyTorch floor (both run in one process, so glibc malloc tunables set in
`GLIBC_TUNABLES` apply to both; benchmarks/README.md).

  python benchmarks/train_step.py                       # demo and paper
  python benchmarks/train_step.py --config demo --num_steps 10
  python benchmarks/train_step.py --config paper --num_steps 2 \
      --image_hw 800,1088
  python benchmarks/train_step.py --breakdown           # 640x640, 800x1200
  python benchmarks/train_step.py --breakdown --image_hw 640,640 \
      --pairs_per_image 4
  python benchmarks/train_step.py --inference           # 640x640

The paper config (ki2hoi_jax/config_lib/base.py: ResNet-50, ViT-B/32 CLIP,
64 queries, 600 classes) is slow on a CPU; its default image size in the
default mode is 512x512 (pass `--image_hw` for the real multi-scale sizes, up
to 800x1333; repeat the flag for several sizes). The set-up and the timed
parts live in step_setup.py and step_parts.py.
Speed targets (issue 18, CPU): the paper step <= 1.4x the floor (aim 1.1x),
inference <= 1.1x the PyTorch forward per image; host matching <= 1 % of
the step.
"""

import os
import resource
from typing import Any, Dict, List, Optional, Tuple

from absl import flags
import jax
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import train_step as ts
import step_parts
import step_setup

MAX_MATCHING_FRACTION = 0.05
BREAKDOWN_MATCHING_FRACTION = 0.01
FLOOR_BAR, FLOOR_AIM, INFERENCE_BAR = 1.4, 1.1, 1.1
STEADY_BAR = 1.1  # Median step at most 10 % above the fastest.
_BREAKDOWN_SIZES = ((640, 640), (800, 1200))
_INFERENCE_SIZE = (640, 640)


def benchmark(name: str, num_steps: int, warmup: int, per_device: int,
              image_hw=None, pairs_per_image: Optional[int] = None) -> float:
  """Times the train step of config `name`; returns the matching fraction."""
  setup = step_setup.build(name, per_device, image_hw, pairs_per_image)
  config, image_hw = setup.config, setup.image_hw
  print(f"[{name}] {len(jax.local_devices())} x {jax.devices()[0].platform} "
        f"device(s), {per_device} image(s) per device at {image_hw[0]}x"
        f"{image_hw[1]}, {config.model.num_queries} queries, "
        f"{config.dataset.max_pairs} GT slots, {len(setup.classes)} classes; "
        f"init {setup.init_s:.1f} s", flush=True)
  times, match, calls, metrics, compile_s = step_setup.time_step(
      setup, num_steps, warmup)
  print(f"[{name}] compile + {warmup} warm-up step(s): {compile_s:.1f} s",
        flush=True)
  step = float(np.median(times))
  fraction = match / step
  print(f"[{name}] step {step * 1e3:.1f} ms (median; {_spread(times)}) = "
        f"device compute and the rest "
        f"{(step - match) * 1e3:.1f} ms + host matching {match * 1e3:.2f} ms "
        f"({calls} assignment calls per step); matching/step = "
        f"{100 * fraction:.2f} % "
        f"({'OK' if fraction < MAX_MATCHING_FRACTION else 'ABOVE'} the "
        f"{100 * MAX_MATCHING_FRACTION:.0f} % budget); loss "
        f"{float(np.asarray(metrics['loss'])[0]):.3f}", flush=True)
  return fraction


def _minor_faults() -> int:
  """Minor page faults of this process so far (getrusage)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _median_ms(times) -> float:
  return 1e3 * float(np.median(times))


def _spread(times) -> str:
  """'min A, max B ms; median/min C' of call times in seconds.

  The steadiness target (issue 32): median/min <= STEADY_BAR.
  """
  ratio = float(np.median(times)) / min(times)
  return (f"min {1e3 * min(times):.0f}, max {1e3 * max(times):.0f} ms; "
          f"median/min {ratio:.2f}, "
          f"{'steady' if ratio <= STEADY_BAR else 'UNSTEADY'}")


def step_and_floor(setup: step_setup.Setup, per_device: int, num_steps: int,
                   warmup: int) -> Dict[str, Any]:
  """The whole train step and the PyTorch floor, called alternately.

  Step and floor alternate, one call each per round, so that a change of
  the machine's load hits both alike.

  Returns:
    {'times', 'floor_times': seconds per call; 'faults', 'floor_faults':
    minor page faults per call; 'match': host matching seconds per step;
    'calls': assignment calls per step; 'compile': seconds of the
    compile and warm-up calls}.
  """
  out = {"times": [], "floor_times": [], "faults": [], "floor_faults": []}
  match_s, calls = 0.0, 0
  _, _, _, _, out["compile"] = step_setup.time_step(setup, 0, warmup)
  for _ in range(num_steps):
    f0 = _minor_faults()
    t, m, c, _, _ = step_setup.time_step(setup, 1, 0)
    out["faults"].append(_minor_faults() - f0)
    out["times"] += t
    match_s += m
    calls = c
    f0 = _minor_faults()
    out["floor_times"] += step_parts.torch_resnet50_times(
        setup.image_hw, per_device, 1)
    out["floor_faults"].append(_minor_faults() - f0)
  out.update(match=match_s / max(1, num_steps), calls=calls)
  return out


def breakdown(image_hw, per_device: int, num_steps: int, warmup: int,
              pairs_per_image: Optional[int]) -> bool:
  """Parts of the paper step and the PyTorch floor at one size; True if OK."""
  h, w = image_hw
  tag = f"[breakdown {h}x{w}]"
  setup = step_setup.build("paper", per_device, image_hw, pairs_per_image)
  whole = step_and_floor(setup, per_device, num_steps, warmup)
  times, floor_times = whole["times"], whole["floor_times"]
  match, calls = whole["match"], whole["calls"]
  step_ms = _median_ms(times)
  print(f"{tag} whole train step: {step_ms:.0f} ms (compile + warm-up "
        f"{whole['compile']:.0f} s); PyTorch ResNet-50 fwd+bwd (floor, "
        f"alternating with the step): {_median_ms(floor_times):.0f} ms; "
        f"minor page faults per call: step {np.median(whole['faults']):.0f}, "
        f"floor {np.median(whole['floor_faults']):.0f} (GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '')!r})", flush=True)
  batch = {k: v[0] for k, v in setup.batch.items()}  # Device 0's shard.
  rng = jax.random.PRNGKey(5)
  calls_by_part, outputs = step_parts.record_part_calls(setup, batch, rng)
  rows = []
  for name, label in step_parts.PARTS:
    fn = step_parts.part_function(name, calls_by_part[name], setup, rng)
    rows.append((label, _median_ms(step_setup.time_calls(fn, num_steps,
                                                         warmup))))
    print(f"{tag}   {label}: {rows[-1][1]:.0f} ms", flush=True)
  matching.HOST_TIMER.read_and_reset()
  loss_ms = _median_ms(step_setup.time_calls(
      step_parts.loss_function(setup, batch, outputs), num_steps, warmup))
  loss_match_s, _ = matching.HOST_TIMER.read_and_reset()
  loss_match_ms = 1e3 * loss_match_s / (num_steps + warmup)
  rows.append(("losses fwd+bwd (device)", loss_ms - loss_match_ms))
  rows.append(("host matching (in the whole step)", 1e3 * match))
  rows.append(("optimizer update", _median_ms(step_setup.time_calls(
      step_parts.optimizer_function(setup), num_steps, warmup))))
  del setup, calls_by_part, outputs
  floor_ms = _median_ms(floor_times)
  rows.append(("rest (glue, step minus the parts)",
               step_ms - sum(ms for _, ms in rows)))
  print(f"{tag} paper config, batch {per_device}, {num_steps} timed calls "
        f"each (medians), {jax.devices()[0].platform}, load "
        f"{os.getloadavg()[0]:.1f}:")
  for label, ms in rows:
    print(f"{tag}   {label:<48} {ms:8.0f} ms {100 * ms / step_ms:6.1f} %")
  print(f"{tag}   {'whole step':<48} {step_ms:8.0f} ms  100.0 %")
  ratio = step_ms / floor_ms
  fraction = match * 1e3 / step_ms
  print(f"{tag} step spread: {_spread(times)}; floor (PyTorch ResNet-50 "
        f"fwd+bwd) {floor_ms:.0f} ms, spread: {_spread(floor_times)}")
  print(f"{tag} step / floor = {ratio:.2f}x (bar {FLOOR_BAR}x, aim "
        f"{FLOOR_AIM}x: {'OK' if ratio <= FLOOR_BAR else 'ABOVE the bar'}); "
        f"host matching / step = {100 * fraction:.2f} % ({calls} "
        f"assignment calls; "
        f"{'OK' if fraction <= BREAKDOWN_MATCHING_FRACTION else 'ABOVE'} "
        f"the {100 * BREAKDOWN_MATCHING_FRACTION:.0f} % budget)", flush=True)
  jax.clear_caches()
  return ratio <= FLOOR_BAR and fraction <= BREAKDOWN_MATCHING_FRACTION


def inference_and_floor(image_hw, per_device: int, num_steps: int,
                        warmup: int) -> Tuple[List[float], List[float]]:
  """Seconds per call of the paper eval step and of the PyTorch forward.

  The pmapped eval step (model + on-device top-k) and a PyTorch ResNet-50
  forward without gradients, at the same size and batch, called alternately
  (as in `step_and_floor`).
  """
  setup = step_setup.build("paper", per_device, image_hw)
  config = setup.config
  p_eval = ts.make_p_eval_step(
      flax_model=setup.model,
      table=postprocess.candidate_table(config.model.interaction_space),
      score_fusion=config.inference.score_fusion,
      top_k=int(config.inference.top_k))
  inputs = {k: setup.batch[k] for k in ("image", "mask", "clip_image")}
  def call():
    return p_eval(setup.state, inputs, setup.text)

  step_setup.time_calls(call, 0, warmup)
  times, floor_times = [], []
  for _ in range(num_steps):
    times += step_setup.time_calls(call, 1, 0)
    floor_times += step_parts.torch_resnet50_times(image_hw, per_device, 1,
                                                   train=False)
  return times, floor_times


def inference(image_hw, per_device: int, num_steps: int, warmup: int) -> bool:
  """Per-image eval step of the paper config vs PyTorch ResNet-50 forward."""
  h, w = image_hw
  tag = f"[inference {h}x{w}]"
  times, floor_times = inference_and_floor(image_hw, per_device, num_steps,
                                           warmup)
  ours = _median_ms(times) / per_device
  floor = _median_ms(floor_times) / per_device
  ratio = ours / floor
  print(f"{tag} paper-config inference {ours:.0f} ms per image vs PyTorch "
        f"ResNet-50 forward {floor:.0f} ms per image (alternating calls; "
        f"batch {per_device}, load "
        f"{os.getloadavg()[0]:.1f}): {ratio:.2f}x (bar {INFERENCE_BAR}x: "
        f"{'OK' if ratio <= INFERENCE_BAR else 'ABOVE'})", flush=True)
  return ratio <= INFERENCE_BAR


def _parse_hw(values) -> List[Tuple[int, int]]:
  return [tuple(int(x) for x in v.split(",")) for v in values]


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_enum("config", "both", ("demo", "paper", "both"),
                    "Config(s) of the default mode.", flag_values=flag_values)
  flags.DEFINE_bool("breakdown", False,
                    "Parts of the paper step and the PyTorch floor.",
                    flag_values=flag_values)
  flags.DEFINE_bool("inference", False,
                    "Paper inference per image vs PyTorch forward.",
                    flag_values=flag_values)
  flags.DEFINE_integer("num_steps", 5,
                       "Timed calls of each thing (after the warm-up).",
                       flag_values=flag_values)
  flags.DEFINE_integer("warmup", 2, "Untimed steps (the first one compiles).",
                       flag_values=flag_values)
  flags.DEFINE_integer("per_device_batch", 2, "Images per device.",
                       flag_values=flag_values)
  flags.DEFINE_multi_string("image_hw", [],
                            "H,W of the padded images; repeat the flag for "
                            "more sizes (default per mode and config).",
                            flag_values=flag_values)
  flags.DEFINE_integer("pairs_per_image", 0,
                       "Valid GT pairs per image (0: max_pairs / 4).",
                       flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); 0 when within the budgets."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  sizes = _parse_hw(args.image_hw)
  warmup = max(1, args.warmup)
  pairs = args.pairs_per_image or None
  ok = True
  if args.breakdown or args.inference:
    if args.breakdown:
      for hw in sizes or _BREAKDOWN_SIZES:
        ok &= breakdown(hw, args.per_device_batch, args.num_steps, warmup,
                        pairs)
    if args.inference:
      for hw in sizes or (_INFERENCE_SIZE,):
        ok &= inference(hw, args.per_device_batch, args.num_steps, warmup)
    return 0 if ok else 1
  names = ("demo", "paper") if args.config == "both" else (args.config,)
  for name in names:
    for hw in sizes or (None,):
      ok &= benchmark(name, args.num_steps, warmup, args.per_device_batch,
                      hw, pairs) < MAX_MATCHING_FRACTION
  return 0 if ok else 1


if __name__ == "__main__":
  cli.run(main)
