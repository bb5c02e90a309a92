"""A grid of the checkpoint's predictions on test images.

Reads the predict outputs of a workdir (`<workdir>/predictions/<stem>.json`
and `.png`, written by `inference/predict.py`, e.g. `main.py` mode
'predict'), predicting the first test images first when there are too few,
draws each record's best triplets (`inference.drawing`, one label block per
human-object pair) and tiles them.
The predictor (JAX, the model) is imported only when it has to run.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional

from PIL import Image

from ki2hoi_jax.analysis import runs
from ki2hoi_jax.inference import drawing


@dataclasses.dataclass
class PredictionGrid:
  """Annotated test images tiled into one image.

  Attributes:
    image: the grid (PIL, RGB).
    records: the predict outputs shown (`{"image", "width", "height",
      "triplets", "json"}`), in grid order.
  """
  image: Image.Image
  records: List[Dict[str, Any]]

  def caption(self) -> str:
    """One line per image: file name and number of triplets, in grid order."""
    return "\n".join(
        f"{i + 1}. {os.path.basename(r['image'])}: {len(r['triplets'])} "
        "triplet(s)" for i, r in enumerate(self.records))

  def _repr_png_(self):
    return self.image._repr_png_()  # pylint: disable=protected-access


def read_predict_outputs(out_dir: str) -> List[Dict[str, Any]]:
  """The predict records (`<stem>.json`) of a folder, sorted by name.

  Each record gets a 'json' key with its path. Other JSON files are skipped.
  """
  if not os.path.isdir(out_dir):
    return []
  records = []
  for name in sorted(os.listdir(out_dir)):
    if not name.endswith(".json"):
      continue
    path = os.path.join(out_dir, name)
    with open(path) as f:
      record = json.load(f)
    if isinstance(record, dict) and "triplets" in record and (
        "image" in record):
      record["json"] = path
      records.append(record)
  return records


def draw_record(record: Mapping[str, Any], max_triplets: int = 5,
                min_score: float = 0.0, cell: int = 320) -> Image.Image:
  """The image of a predict record with its best triplets drawn.

  The original image is read from `record['image']` (relative paths are
  tried against the record's folder too); when it is gone, the PNG that
  predict wrote beside the JSON (already annotated) is used.

  Args:
    record: a `read_predict_outputs` record.
    max_triplets: draw at most this many (they are sorted by
      `rank_score`); the verbs of one human-object pair share a label block.
    min_score: skip triplets whose `score` (the confidence) is below this.
    cell: the image is resized so that its longer side has this many
      pixels before drawing (labels stay legible in the grid).

  Returns:
    The annotated RGB image.
  """
  path = record["image"]
  folder = os.path.dirname(record.get("json", ""))
  candidates = [path] if os.path.isabs(path) else [
      path, os.path.join(folder, path)]
  for p in candidates:
    if os.path.isfile(p):
      with Image.open(p) as im:
        image = im.convert("RGB")
      # Resized to the cell first, so that labels keep their size in the grid.
      scale = cell / max(image.size)
      image = image.resize((max(1, round(image.width * scale)),
                            max(1, round(image.height * scale))),
                           Image.BICUBIC)
      triplets = []
      for t in record["triplets"]:
        if t["score"] >= min_score:
          t = dict(t)
          t["human_box"] = [v * scale for v in t["human_box"]]
          t["object_box"] = [v * scale for v in t["object_box"]]
          triplets.append(t)
      return drawing.draw_triplets(image, triplets,
                                   max_triplets=max_triplets,
                                   min_short_side=0)
  png = os.path.splitext(record.get("json", ""))[0] + ".png"
  if os.path.isfile(png):
    with Image.open(png) as im:
      return im.convert("RGB")
  raise FileNotFoundError(f"neither the image {path} nor {png} exists")


def prediction_grid(workdir: str, n: int = 6, columns: int = 3,
                    cell: int = 320, out_dir: Optional[str] = None,
                    score_threshold: Optional[float] = None,
                    max_triplets: int = 5) -> PredictionGrid:
  """Predictions of the workdir's checkpoint on test images, tiled.

  Reads the predict outputs in `out_dir`; when it holds fewer than `n`
  records, first runs `inference.predict.run` (best checkpoint, else latest)
  on the first `n` test images of the run's dataset
  (`inference.predict.default_images`),
  writing `<stem>.json` / `<stem>.png` there.

  Args:
    workdir: training workdir.
    n: images in the grid.
    columns: grid columns.
    cell: thumbnail size (pixels).
    out_dir: predict output folder; None = `<workdir>/predictions` (where
      `main.py` mode 'predict' writes).
    score_threshold: confidence threshold of a new predict run and of
      drawing; None = the run's `config.predict.score_threshold` for a new
      run and no extra filter on existing records.
    max_triplets: triplets drawn per image.

  Returns:
    The PredictionGrid (displayable in a notebook).
  """
  workdir = os.path.abspath(workdir)
  out_dir = out_dir or os.path.join(workdir, "predictions")
  records = read_predict_outputs(out_dir)
  if len(records) < n:
    # Imported only here: the predictor brings in JAX and the model.
    from ki2hoi_jax.inference import predict  # pylint: disable=g-import-not-at-top
    config = runs.load_config(workdir)
    images = predict.default_images(config, workdir, limit=n)
    summary = predict.run(None, workdir, images, out_dir,
                          score_threshold=score_threshold)
    if summary.failed:
      raise RuntimeError(summary.text())
    records = read_predict_outputs(out_dir)
  records = records[:n]
  min_score = 0.0 if score_threshold is None else float(score_threshold)
  tiles = [draw_record(r, max_triplets=max_triplets, min_score=min_score,
                       cell=cell) for r in records]
  return PredictionGrid(drawing.image_grid(tiles, columns=columns,
                                           cell=cell), records)
