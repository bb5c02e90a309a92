r"""Benchmark of the HICO-DET evaluator at full test-set scale (synthetic).

  python benchmarks/evaluator.py [--num_images 9546] [--seed 0] [--keep DIR]

Builds, deterministically, a GT JSON shaped like `test_hico.json` (9,546
images, 1-6 pairs each, about 33k pairs, every HOI class present) and a
predictions JSON shaped like the post-processor's output (64 queries per
image, 100 HOI predictions per image after the top-k cut, about half of the
queries placed near a GT pair with jittered boxes, which are never inverted,
float64 scores without ties). It then times

* in-process: reading both JSON files (orjson), `hico.evaluate` split into
  flattening (dicts -> arrays) and the vectorised evaluation itself;
* the CLI `python -m ki2hoi_jax.evaluation.hico ... --output` as a
  subprocess (interpreter start, imports, reading, evaluation, writing),
  with its peak RSS;
* `--gc_rounds N` (default 3): a same-run A/B of the evaluator's one
  process-level setting, the cyclic garbage collector paused while JSON is
  parsed and flattened (`hico._gc_paused`): N rounds, each timing that work
  with and without the pause in alternating order; medians and their ratio.
"""

import contextlib
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import flags
import numpy as np
import orjson

from ki2hoi_jax import cli
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_inputs

NUM_QUERIES = 64
PREDICTIONS_PER_IMAGE = 100


def _random_boxes(rng, n, w, h):
  x1 = rng.uniform(0, w * 0.7, n)
  y1 = rng.uniform(0, h * 0.7, n)
  x2 = x1 + rng.uniform(20, w * 0.3, n)
  y2 = y1 + rng.uniform(20, h * 0.3, n)
  return np.stack([x1, y1, x2, y2], -1)


def _jitter(rng, box, sigma=8.0):
  """`box` + N(0, sigma) per coordinate; x2 >= x1, y2 >= y1 (the evaluator
  rejects inverted boxes), so a collapsed side becomes zero width."""
  b = box + rng.normal(0, sigma, 4)
  b[2:] = np.maximum(b[2:], b[:2])
  return b


def build_case(num_images: int, seed: int):
  """Returns (gt_records, prediction_entries), deterministic in the seed."""
  meta = metadata.hico()
  rng = np.random.default_rng(seed)
  hoi_obj = meta.hoi_object
  hois_of_object = [np.flatnonzero(hoi_obj == o)
                    for o in range(meta.num_objects)]
  coco = np.asarray(meta.coco_category_ids)
  gts, preds = [], []
  score_pool = rng.permutation(num_images * PREDICTIONS_PER_IMAGE * 4)
  score_pool = (score_pool + rng.uniform(0.0, 0.5, score_pool.size)) / (
      score_pool.size + 1.0)  # Distinct float64 scores in (0, 1).
  used = 0
  for i in range(num_images):
    w, h = rng.uniform(400, 640), rng.uniform(300, 480)
    n_pairs = int(rng.integers(1, 7))
    n_hum = int(rng.integers(1, 3))
    n_obj = int(rng.integers(1, 4))
    hum = _random_boxes(rng, n_hum, w, h)
    obj = _random_boxes(rng, n_obj, w, h)
    obj_cat = rng.integers(0, meta.num_objects, n_obj)
    anns = ([{"bbox": b.round(0).tolist(), "category_id": 1} for b in hum] +
            [{"bbox": b.round(0).tolist(), "category_id": int(coco[c])}
             for b, c in zip(obj, obj_cat)])
    pairs = []
    for _ in range(n_pairs):
      s, o = int(rng.integers(n_hum)), int(rng.integers(n_obj))
      hoi = int(rng.choice(hois_of_object[obj_cat[o]]))
      pairs.append((s, o, hoi))
    gts.append({"file_name": f"HICO_test2015_{i:08d}.jpg",
                "annotations": anns,
                "hoi_annotation": [
                    {"subject_id": s, "object_id": n_hum + o,
                     "category_id": int(meta.hoi_verb[c]) + 1,
                     "hoi_category_id": c + 1} for s, o, c in pairs]})
    # Queries: ~half near GT pairs (jittered), the rest random.
    q_sub = _random_boxes(rng, NUM_QUERIES, w, h)
    q_obj = _random_boxes(rng, NUM_QUERIES, w, h)
    q_cat = rng.integers(0, meta.num_objects, NUM_QUERIES)
    near = NUM_QUERIES // 2
    src = rng.integers(0, n_pairs, near)
    for q in range(near):
      s, o, _ = pairs[src[q]]
      q_sub[q] = _jitter(rng, hum[s])
      q_obj[q] = _jitter(rng, obj[o])
      q_cat[q] = obj_cat[o]
    cand_q = np.concatenate([np.full(hois_of_object[c].size, q)
                             for q, c in enumerate(q_cat)])
    cand_h = np.concatenate([hois_of_object[c] for c in q_cat])
    k = min(PREDICTIONS_PER_IMAGE, cand_q.size)
    pick = rng.choice(cand_q.size, k, replace=False)
    scores = np.sort(score_pool[used:used + k])[::-1]
    used += k
    qs, hs = cand_q[pick], cand_h[pick]
    uq = list(dict.fromkeys(qs.tolist()))
    sub_id = {q: j for j, q in enumerate(uq)}
    boxes = ([{"bbox": q_sub[q].tolist(), "category_id": 1} for q in uq] +
             [{"bbox": q_obj[q].tolist(), "category_id": int(coco[q_cat[q]])}
              for q in uq])
    preds.append({
        "file_name": gts[-1]["file_name"],
        "predictions": boxes,
        "hoi_prediction": [
            {"subject_id": sub_id[q], "object_id": len(uq) + sub_id[q],
             "category_id": int(meta.hoi_verb[c]) + 1,
             "hoi_category_id": int(c) + 1, "score": float(s)}
            for q, c, s in zip(qs.tolist(), hs.tolist(), scores.tolist())]})
  return gts, preds


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_integer("num_images", 9546, "Test images of the case.",
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of the case.",
                       flag_values=flag_values)
  flags.DEFINE_string("keep", "",
                      "Write the files here instead of a temp dir.",
                      flag_values=flag_values)
  flags.DEFINE_bool("reuse", False, "With --keep: reuse files already there.",
                    flag_values=flag_values)
  flags.DEFINE_integer("gc_rounds", 3,
                       "Rounds of the GC-pause A/B (0: skip it).",
                       flag_values=flag_values)


def _parse_and_flatten(gt_path: str, pred_path: str, pause: bool) -> float:
  """Seconds to parse both JSON files and flatten them to arrays."""
  gc.collect()
  start = time.perf_counter()
  # pylint: disable-next=protected-access
  with hico._gc_paused() if pause else contextlib.nullcontext():
    with open(gt_path, "rb") as f:
      gt = hico_inputs.load_ground_truth(orjson.loads(f.read()))
    with open(pred_path, "rb") as f:
      hico_inputs.flatten_predictions(orjson.loads(f.read()), gt.file_names)
  return time.perf_counter() - start


def _gc_pause_ab(gt_path: str, pred_path: str, rounds: int) -> None:
  times = {True: [], False: []}
  for r in range(rounds):
    for pause in ((True, False) if r % 2 == 0 else (False, True)):
      times[pause].append(_parse_and_flatten(gt_path, pred_path, pause))
  paused, running = np.median(times[True]), np.median(times[False])
  print(f"GC pause A/B ({rounds} rounds, alternating): parse + flatten "
        f"{paused:.2f} s paused, {running:.2f} s with the collector running "
        f"(ratio {running / paused:.2f}x; all: paused "
        f"{[round(t, 2) for t in times[True]]}, running "
        f"{[round(t, 2) for t in times[False]]})")


def main(argv) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)

  with tempfile.TemporaryDirectory() as tmp:
    folder = args.keep or tmp
    os.makedirs(folder, exist_ok=True)
    gt_path = os.path.join(folder, "test_hico.json")
    pred_path = os.path.join(folder, "preds.json")
    out_path = os.path.join(folder, "metrics.json")
    if not (args.reuse and os.path.exists(gt_path) and
            os.path.exists(pred_path)):
      t = time.perf_counter()
      gts, preds = build_case(args.num_images, args.seed)
      print(f"built case: {len(gts)} images, "
            f"{sum(len(g['hoi_annotation']) for g in gts)} GT pairs, "
            f"{sum(len(p['hoi_prediction']) for p in preds)} predictions "
            f"({time.perf_counter() - t:.1f} s)")
      with open(gt_path, "wb") as f:
        f.write(orjson.dumps(gts))
      with open(pred_path, "wb") as f:
        f.write(orjson.dumps(preds))
      del gts, preds
    print(f"files: GT {os.path.getsize(gt_path) / 1e6:.1f} MB, predictions "
          f"{os.path.getsize(pred_path) / 1e6:.1f} MB")

    t0 = time.perf_counter()
    gt_records = hico.load_json(gt_path)
    pred_entries = hico.load_json(pred_path)
    t1 = time.perf_counter()
    metrics = hico.evaluate(gt_records, pred_entries)
    t2 = time.perf_counter()
    with hico._gc_paused():  # pylint: disable=protected-access
      gt = hico_inputs.load_ground_truth(gt_records)
      det = hico_inputs.flatten_predictions(pred_entries, gt.file_names)
    t3 = time.perf_counter()
    hico.evaluate(gt, det)
    t4 = time.perf_counter()
    print(f"in-process: read JSON {t1 - t0:.2f} s; evaluate() after loading "
          f"{t2 - t1:.2f} s (a second run: flattening dicts to arrays "
          f"{t3 - t2:.2f} s + vectorised evaluation {t4 - t3:.2f} s)")
    print(f"  default mAP {metrics['default']}")
    del gt_records, pred_entries, gt, det

    cmd = [sys.executable, "-m", "ki2hoi_jax.evaluation.hico",
           "--annotations", gt_path, "--predictions", pred_path,
           "--output", out_path]
    t4 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
    t5 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(proc.stdout.strip().splitlines()[0])
    print(proc.stdout.strip().splitlines()[1])
    print(f"CLI (subprocess, incl. start-up and writing): {t5 - t4:.2f} s "
          f"wall, {usage.ru_utime + usage.ru_stime:.2f} s CPU, peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB; its own timing: "
          f"{proc.stderr.strip()}")
    if args.gc_rounds:
      _gc_pause_ab(gt_path, pred_path, args.gc_rounds)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
  return 0


if __name__ == "__main__":
  cli.run(main)
