"""Result files of the synthetic Table I and the table rendered from them.

Each trained model of `benchmarks/zero_shot_table.py` (a setting, CLIP,
variant and seed) writes one JSON file, committed as soon as it lands:

  {"name": "uo_synthetic_seed0", "rows": [<one per evaluation: split, clip,
   variant, seed, verb_queries, clip_pair_fusion, full, seen, unseen, step,
   train_seconds, ...>], "overrides": ["dataset.zero_shot_split=uo", ...],
   "fingerprint": {"renderer": <hex>, "config": <hex>}, "git_commit": ...,
   "detector": {<settings of its pretrained detector>} or null,
   "clip": {<settings of its synthetic CLIP>} or null}

The fingerprint pins what the numbers depend on: `renderer` hashes what
the renderer draws in the run's world (`renderer_fingerprint`: its templates
and HOI list, and the pixels and annotation records of a fixed set of
training and balanced test images), so a change of the images or labels is
caught and an edited comment is not; `config` hashes the demo config with
the file's `overrides` applied (checkpoint paths, the workdir and the
evaluation-only fields left out: `config_fingerprint`). `render` prints the
markdown table from a folder of such files and refuses (lists apart, never
averages in) every file whose fingerprint differs from what the current code
gives, so a table in the docs cannot silently mix worlds or configs.
"""

import glob
import hashlib
import json
import os
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.analysis import zero_shot_table
from ki2hoi_jax.config_lib import files
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic
from ki2hoi_jax.data import synthetic_scenes

# Images of the renderer fingerprint: how many of each kind, their size.
_FINGERPRINT_IMAGES = 24
_FINGERPRINT_SIZE = 128
_FINGERPRINT_SEED = 987654  # Outside every seed range the project draws.
# Fields that do not change what a run learns or how it is scored.
_UNPINNED = ("mode", "progress_bar", "log_every_steps", "init.clip_checkpoint",
             "init.detr_checkpoint", "model.verb_queries",
             "inference.clip_pair_fusion", "eval_at_start")
# Fields added after result files were written, each with the value that
# runs the code those files measured: left out of the fingerprint at that
# value, so that adding a field keeps the files valid.
_ADDED_FIELDS = {"loss.object_classes": "all",
                 "optimizer.pretrained_anchor": 0.0}


def renderer_fingerprint(world: str) -> str:
  """sha256 (16 hex digits) of what the renderer draws in `world`.

  Hashes the world's templates and HOI list, the unseen HOIs of every
  zero-shot setting, and for `_FINGERPRINT_IMAGES`
  training-style and as many balanced test-style images (renderer seed
  `_FINGERPRINT_SEED`, `_FINGERPRINT_SIZE` pixels) their pixels and HICO-DET
  annotation records. About a second.
  """
  digest = hashlib.sha256()
  digest.update(repr(synthetic_scenes.templates("hico_det", world)).encode())
  digest.update(repr(synthetic.hoi_subset("hico_det", world)).encode())
  meta = metadata.hico()
  digest.update(repr([meta.unseen_hois(split) for split in
                      metadata.ZERO_SHOT_SPLITS]).encode())
  for balanced in (False, True):
    for i in range(_FINGERPRINT_IMAGES):
      rng = np.random.default_rng([_FINGERPRINT_SEED, int(balanced), i])
      pixels, groups = synthetic_scenes.sample_image(
          rng, _FINGERPRINT_SIZE, "hico_det", world, balanced=balanced)
      digest.update(pixels.tobytes())
      digest.update(json.dumps(synthetic.hico_record(groups, "x.jpg", i),
                               sort_keys=True).encode())
  return digest.hexdigest()[:16]


def config_fingerprint(config_path: str, overrides: Sequence[str]) -> str:
  """sha256 (16 hex digits) of the config with `overrides`, unpinned fields out.

  The fields of `_ADDED_FIELDS` are left out too where they hold their
  listed value.

  Args:
    config_path: the config file (configs/demo.py).
    overrides: 'field=value' assignments (`files.load_config`).
  """
  config = files.load_config(config_path, overrides).to_dict()

  def parent_and_leaf(dotted):
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
      node = node[p]
    return node, leaf

  for dotted in _UNPINNED:
    node, leaf = parent_and_leaf(dotted)
    node.pop(leaf, None)
  for dotted, old_value in _ADDED_FIELDS.items():
    node, leaf = parent_and_leaf(dotted)
    if node.get(leaf) == old_value:
      node.pop(leaf)
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit(repo: str) -> str:
  """HEAD of the repository at `repo` ('' outside a git checkout)."""
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                          capture_output=True, text=True, check=True
                          ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def write_result(results_dir: str, name: str, rows: List[Dict[str, Any]],
                 overrides: Sequence[str], config_path: str, repo: str,
                 detector: Optional[Dict[str, Any]] = None,
                 clip: Optional[Dict[str, Any]] = None) -> str:
  """Writes `<results_dir>/<name>.json` (module docstring); returns its path."""
  world = files.load_config(config_path, overrides).dataset.synthetic_world
  record = {
      "name": name, "rows": rows, "overrides": list(overrides),
      "fingerprint": {"renderer": renderer_fingerprint(world),
                      "config": config_fingerprint(config_path, overrides)},
      "git_commit": git_commit(repo), "detector": detector, "clip": clip}
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, name + ".json")
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
  return path


def read_results(results_dir: str, config_path: str
                 ) -> Tuple[List[Dict[str, Any]], List[str]]:
  """Rows of the result files that match the current code, and the refused.

  Returns:
    (rows of every file whose fingerprint matches, names of the others with
    what differs).
  """
  rows, refused = [], []
  renderer = {}  # World: its fingerprint.
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path) as f:
      record = json.load(f)
    world = files.load_config(config_path,
                              record["overrides"]).dataset.synthetic_world
    if world not in renderer:
      renderer[world] = renderer_fingerprint(world)
    stale = []
    if record["fingerprint"]["renderer"] != renderer[world]:
      stale.append("renderer")
    if record["fingerprint"]["config"] != config_fingerprint(
        config_path, record["overrides"]):
      stale.append("config")
    if stale:
      refused.append(f"{os.path.basename(path)} ({' and '.join(stale)} "
                     "changed since it was written)")
    else:
      rows += record["rows"]
  return rows, refused


def render(results_dir: str, config_path: str) -> str:
  """The markdown table of a results folder, refused files listed below it.

  Raises:
    ValueError: no result file matches the current code.
  """
  rows, refused = read_results(results_dir, config_path)
  if not rows:
    raise ValueError(f"no result file in {results_dir} matches the current "
                     f"renderer and config (refused: {refused or 'none'})")
  text = zero_shot_table.format_table(rows)
  text += "\n\n" + zero_shot_table.format_pair_counts(rows)
  if refused:
    text += "\n\nRefused (fingerprint differs): " + "; ".join(refused)
  return text


def markers(results_dir: str) -> Tuple[str, str]:
  """The begin and end comments framing `results_dir`'s table in a document."""
  name = os.path.basename(os.path.normpath(results_dir))
  return (f"<!-- rendered from results/{name}: begin -->",
          f"<!-- rendered from results/{name}: end -->")


def replace_rendered(document: str, results_dir: str, table: str) -> str:
  """`document` with the text between `results_dir`'s markers set to `table`.

  Raises:
    ValueError: the document lacks the markers, or has them out of order.
  """
  begin, end = markers(results_dir)
  start, stop = document.find(begin), document.find(end)
  if start < 0 or stop < start:
    raise ValueError(f"the document has no '{begin}' ... '{end}' block")
  return (document[:start + len(begin)] + "\n" + table.strip("\n") + "\n"
          + document[stop:])


def render_into(path: str, results_dir: str, table: str) -> None:
  """Sets the block between `results_dir`'s markers in the file at `path`.

  Raises:
    ValueError: the file lacks the markers (`replace_rendered`).
  """
  with open(path) as f:
    document = f.read()
  document = replace_rendered(document, results_dir, table)
  with open(path, "w") as f:
    f.write(document)
