"""Result files of the synthetic Table I (analysis/table_results.py)."""

import dataclasses
import importlib.util
import json
import os

import pytest

from ki2hoi_jax.analysis import hoi_metrics
from ki2hoi_jax.analysis import table_results
from ki2hoi_jax.analysis import zero_shot_table
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "configs", "demo.py")
OVERRIDES = ["seed=1", "dataset.zero_shot_split=uo", "optimizer.num_epochs=3"]


def _row(seed, unseen, pairs):
  return {"split": "uo", "clip": "synthetic", "variant": "", "seed": seed,
          "verb_queries": "training_classes", "clip_pair_fusion": 0.5,
          "full": 30.0, "seen": 40.0, "unseen": unseen,
          "unseen_test_pairs": pairs, "unseen_hois_with_test_pairs": 3}


def test_config_fingerprint_pins_what_a_run_learns():
  base = table_results.config_fingerprint(DEMO, OVERRIDES)
  assert base == table_results.config_fingerprint(DEMO, OVERRIDES)
  # Evaluation-only and path fields are not pinned ...
  assert base == table_results.config_fingerprint(DEMO, OVERRIDES + [
      "init.clip_checkpoint=/x.msgpack", "inference.clip_pair_fusion=0.0",
      "progress_bar=False"])
  # ... what training or scoring reads is.
  assert base != table_results.config_fingerprint(
      DEMO, OVERRIDES + ["optimizer.learning_rate=1e-3"])
  assert base != table_results.config_fingerprint(
      DEMO, OVERRIDES + ["inference.score_fusion=sum"])
  # A field added later is left out at the value that runs the old code.
  assert base == table_results.config_fingerprint(
      DEMO, OVERRIDES + ["loss.object_classes=all"])
  assert base != table_results.config_fingerprint(
      DEMO, OVERRIDES + ["loss.object_classes=trained"])


def test_renderer_fingerprint_follows_the_drawn_world(monkeypatch):
  compositional = table_results.renderer_fingerprint("compositional")
  assert compositional == table_results.renderer_fingerprint("compositional")
  assert compositional != table_results.renderer_fingerprint("basic")
  # A changed template weight changes what the images show.
  table = list(synthetic_scenes.templates("hico_det", "compositional"))
  table[0] = dataclasses.replace(table[0], hico_weight=50.0)
  monkeypatch.setitem(synthetic_scenes._WORLD_TEMPLATES, "compositional",
                      tuple(table))
  assert compositional != table_results.renderer_fingerprint("compositional")


def test_render_uses_matching_files_and_refuses_the_others(tmp_path):
  results = str(tmp_path)
  for seed, unseen in ((0, 10.0), (1, 20.0)):
    table_results.write_result(results, f"uo_synthetic_seed{seed}",
                               [_row(seed, unseen, 40 + seed)],
                               OVERRIDES[1:] + [f"seed={seed}"], DEMO,
                               str(tmp_path))
  rows, refused = table_results.read_results(results, DEMO)
  assert [r["unseen"] for r in rows] == [10.0, 20.0] and not refused
  text = table_results.render(results, DEMO)
  assert "| UO | synthetic | default | training_classes | 0.5 |" in text
  assert "15.00 ± 5.00" in text  # Mean ± half-range of 10 and 20.
  assert "| UO | synthetic | default | 1 | 41 | 3 | - | - | - | - |" in text
  # A file written by another renderer is refused, not averaged in.
  path = tmp_path / "uo_synthetic_seed1.json"
  record = json.loads(path.read_text())
  record["fingerprint"]["renderer"] = "0" * 16
  path.write_text(json.dumps(record))
  rows, refused = table_results.read_results(results, DEMO)
  assert [r["unseen"] for r in rows] == [10.0]
  assert refused == ["uo_synthetic_seed1.json (renderer changed since it "
                     "was written)"]
  assert "Refused (fingerprint differs): uo_synthetic_seed1.json" in (
      table_results.render(results, DEMO))
  os.remove(tmp_path / "uo_synthetic_seed0.json")
  with pytest.raises(ValueError, match="no result file"):
    table_results.render(results, DEMO)


def test_replace_rendered_sets_the_block_between_its_markers():
  begin, end = table_results.markers("benchmarks/results/table1/")
  assert begin == "<!-- rendered from results/table1: begin -->"
  document = f"intro\n{begin}\nold table\n{end}\nafter\n"
  new = table_results.replace_rendered(document, "x/table1", "| a |\n")
  assert new == f"intro\n{begin}\n| a |\n{end}\nafter\n"
  assert table_results.replace_rendered(new, "x/table1", "| a |") == new
  with pytest.raises(ValueError, match="no .* block"):
    table_results.replace_rendered("intro\n", "x/table1", "| a |")


def test_render_into_rewrites_only_the_block_of_a_file(tmp_path):
  begin, end = table_results.markers("results/detector")
  path = tmp_path / "doc.md"
  path.write_text(f"intro\n{begin}\nold\n{end}\nafter\n")
  table_results.render_into(str(path), "benchmarks/results/detector", "| b |")
  assert path.read_text() == f"intro\n{begin}\n| b |\n{end}\nafter\n"


def test_docs_detector_table_is_the_rendered_committed_figures():
  """docs/synthetic_benchmarks.md's detector table = detector_table's output."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
      "detector_table", os.path.join(repo, "benchmarks", "detector_table.py"))
  detector_table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(detector_table)
  figures_dir = os.path.join(repo, "benchmarks", "results", "detector")
  figures = {}
  for name in sorted(os.listdir(figures_dir)):
    if name.endswith(".ap.json"):
      with open(os.path.join(figures_dir, name)) as f:
        figures[name[:-len(".ap.json")]] = json.load(f)
  assert len(figures) >= 9
  with open(os.path.join(repo, "docs", "synthetic_benchmarks.md")) as f:
    document = f.read()
  table = detector_table.format_table(figures)
  assert table_results.replace_rendered(document, figures_dir,
                                        table) == document


def test_pair_counts_table_skips_rows_without_counts():
  rows = [_row(0, 1.0, 14), {**_row(1, 2.0, 0), "split": "uv"},
          {**_row(0, 1.0, 14), "clip_pair_fusion": 0.0,
           "unseen_pairs_object_boxed": 5, "unseen_pairs_kept": 3,
           "unseen_pairs_kept_right_class": 2, "wall_seconds": 633.0}]
  del rows[1]["unseen_test_pairs"]
  text = zero_shot_table.format_pair_counts(rows)
  # One line per model: the row with localisation counts wins.
  assert text.splitlines()[2:] == [
      "| UO | synthetic | default | 0 | 14 | 3 | 5 | 3 | 2 | 10.6 |"]


def test_unseen_pair_localisation_counts_known_cases():
  meta = metadata.hico()
  skate = meta.objects.index("skateboard")
  unseen = meta.hoi_index(meta.verbs.index("ride"), skate)  # 'uo': unseen.
  seen = meta.hoi_index(meta.verbs.index("ride"), meta.objects.index(
      "bicycle"))
  assert unseen in meta.unseen_hois("uo") and seen not in meta.unseen_hois(
      "uo")
  person, board = [0, 0, 19, 39], [0, 40, 19, 49]
  gt = [{"file_name": "a.jpg", "annotations": [
      {"bbox": person, "category_id": 1}, {"bbox": board, "category_id": 42},
      {"bbox": [50, 0, 69, 39], "category_id": 1},
      {"bbox": [50, 40, 69, 49], "category_id": 42}],
         "hoi_annotation": [
             {"subject_id": 0, "object_id": 1, "hoi_category_id": unseen + 1},
             {"subject_id": 2, "object_id": 3, "hoi_category_id": unseen + 1},
             {"subject_id": 0, "object_id": 1, "hoi_category_id": seen + 1}]}]
  pred = [{"file_name": "a.jpg", "predictions": [
      {"bbox": person, "category_id": 1}, {"bbox": board, "category_id": 2},
      {"bbox": [50, 40, 69, 49], "category_id": 42}],
           "hoi_prediction": [{"subject_id": 0, "object_id": 1,
                               "hoi_category_id": seen + 1, "score": 0.9}]}]
  # Pair 1: kept (boxes match) but with the seen class; pair 2: its object
  # is boxed, no kept pair covers it; the seen pair is not counted.
  assert hoi_metrics.unseen_pair_localisation(pred, gt, "uo") == {
      "unseen_test_pairs": 2, "object_boxed": 2, "kept": 1,
      "kept_right_class": 0}


def test_unseen_false_positives_are_told_apart():
  meta = metadata.hico()
  skate = meta.objects.index("skateboard")
  ride = meta.hoi_index(meta.verbs.index("ride"), skate) + 1
  hold = meta.hoi_index(meta.verbs.index("hold"), skate) + 1
  assert {ride - 1, hold - 1} <= set(meta.unseen_hois("uo"))
  skate_id = meta.coco_category_ids[skate]
  person, board = [0, 0, 19, 39], [0, 40, 19, 49]
  person_2, board_2, bike = [50, 0, 69, 39], [50, 40, 69, 49], [80, 0, 99, 39]
  person_3 = [100, 0, 119, 39]
  gt = [{"file_name": "a.jpg", "annotations": [
      {"bbox": person, "category_id": 1},
      {"bbox": board, "category_id": skate_id}],
         "hoi_annotation": [{"subject_id": 0, "object_id": 1,
                             "hoi_category_id": ride}]},
        {"file_name": "b.jpg", "annotations": [
            {"bbox": person_2, "category_id": 1},
            {"bbox": board_2, "category_id": skate_id},
            {"bbox": bike, "category_id": 2},
            {"bbox": person_3, "category_id": 1}],
         "hoi_annotation": [{"subject_id": 0, "object_id": 1,
                             "hoi_category_id": hold}]}]
  loose = [0, 44, 19, 60]  # IoU with the board between 0.1 and 0.5.
  far = [150, 150, 160, 160]

  def preds(*scored):
    boxes_of = sorted({tuple(b) for _, h, o in scored for b in (h, o)})
    return {"predictions": [{"bbox": list(b), "category_id": 1}
                            for b in boxes_of],
            "hoi_prediction": [{"subject_id": boxes_of.index(tuple(h)),
                                "object_id": boxes_of.index(tuple(o)),
                                "hoi_category_id": ride, "score": s}
                               for s, h, o in scored]}

  pred = [dict(file_name="a.jpg", **preds(
      (0.95, person, loose), (0.9, person, far), (0.85, far, board),
      (0.8, person, board),  # The true positive.
      (0.7, person, board))),  # A duplicate, below it: not counted.
          dict(file_name="b.jpg", **preds(
              (0.84, person_2, board_2),  # An annotated pair, verb 'hold'.
              (0.83, person_2, bike),  # A bicycle, not a skateboard.
              (0.82, person_3, board_2)))]  # Not annotated as a pair.
  assert hoi_metrics.unseen_false_positives(pred, gt, "uo") == {
      "true_positives": 1, "duplicate": 0, "loose object box": 1,
      "object box elsewhere": 1, "object of another class": 1,
      "human box off": 1, "other verb": 1, "unannotated pair": 1}
  # Without a true positive nothing outranks one: no count.
  pred[0]["hoi_prediction"] = pred[0]["hoi_prediction"][:3]
  assert sum(hoi_metrics.unseen_false_positives(pred, gt, "uo").values()) == 0


def test_a_variant_that_changes_the_model_gets_its_own_detector(tmp_path):
  """benchmarks/zero_shot_table.py: `<root>/detector_<field=value>/`."""
  from ki2hoi_jax.config_lib import files  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.train import pretrain_detector  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(DEMO.rsplit(os.sep, 1)[0])
  spec = importlib.util.spec_from_file_location(
      "zero_shot_table_script",
      os.path.join(repo, "benchmarks", "zero_shot_table.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  demo = files.load_config(DEMO)
  overrides = ["--config.model.num_queries=16", "--config.seed=3"]

  def figure(folder, num_queries):
    path = tmp_path / folder / "synthetic_detr.msgpack"
    path.parent.mkdir(exist_ok=True)
    model = pretrain_detector.detector_model(files.load_config(
        DEMO, [f"model.num_queries={num_queries}"]))
    with open(pretrain_detector.ap_path(str(path)), "w") as f:
      json.dump({"steps": 30, "world": demo.dataset.synthetic_world,
                 "model": model}, f)
    return str(path)

  shared = figure("detector", demo.model.num_queries)
  assert script._ensure_detector(str(tmp_path), 30) == shared
  # Overrides that leave the model alone share the detector.
  assert script._ensure_detector(str(tmp_path), 30, overrides[1:]) == shared
  own = figure("detector_num_queries=16", 16)
  assert script._ensure_detector(str(tmp_path), 30, overrides) == own
  figure("detector_num_queries=16", demo.model.num_queries)  # Another model.
  with pytest.raises(ValueError, match="num_queries"):
    script._ensure_detector(str(tmp_path), 30, overrides)
  with pytest.raises(ValueError, match="steps 30"):
    script._ensure_detector(str(tmp_path), 40)
  assert script._ensure_detector(str(tmp_path), 0, overrides) == ""
