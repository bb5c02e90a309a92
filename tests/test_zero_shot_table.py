"""Synthetic Table I (analysis/zero_shot_table.py): what each model is
evaluated with, and the table's cells (mean ± half-range over seeds)."""

from ki2hoi_jax.analysis import zero_shot_table as zst


def test_evaluation_plan_default_fusions():
  # The demo's W = 0.5: both query modes at 0.5, then the first mode at 0.
  assert zst.evaluation_plan("uv", "both", None, True, 0.5) == [
      ("training_classes", 0.5), ("all_classes", 0.5),
      ("training_classes", 0.0)]
  # Same queries either way (no unseen verb): one mode.
  assert zst.evaluation_plan("uo", "both", None, False, 0.5) == [
      ("training_classes", 0.5), ("training_classes", 0.0)]
  # A demo without fusion: evaluated once.
  assert zst.evaluation_plan("uv", "all_classes", None, True, 0.0) == [
      ("all_classes", 0.0)]


def test_evaluation_plan_given_fusions_and_full_setting():
  assert zst.evaluation_plan("uv", "training_classes", [0.0], True, 0.5) == [
      ("training_classes", 0.0)]
  assert zst.evaluation_plan("rf_uc", "training_classes", [0.3, 0.0, 1.0],
                             True, 0.5) == [
      ("training_classes", 0.3), ("training_classes", 0.0),
      ("training_classes", 1.0)]
  # Fully supervised: nothing unseen to fuse, the first fusion only.
  assert zst.evaluation_plan("", "both", [0.5, 0.0], True, 0.5) == [
      ("training_classes", 0.5), ("all_classes", 0.5)]


def test_format_table_groups_seeds_by_variant():
  rows = [dict(split="uv", clip="synthetic", variant="", seed=s,
               verb_queries="training_classes", clip_pair_fusion=0.0,
               full=f, seen=f + 1, unseen=u)
          for s, f, u in ((0, 40.0, 20.0), (1, 36.0, 10.0))]
  rows.append(dict(split="uv", clip="synthetic", variant="t5none", seed=0,
                   verb_queries="training_classes", clip_pair_fusion=0.0,
                   full=30.0, seen=31.0, unseen=5.0))
  lines = zst.format_table(rows).split("\n")
  assert len(lines) == 4  # Header, rule, two groups.
  assert lines[2] == ("| UV | synthetic | default | training_classes | 0 | "
                      "38.00 ± 2.00 | 39.00 ± 2.00 | 15.00 ± 5.00 | 0,1 |")
  assert lines[3] == ("| UV | synthetic | t5none | training_classes | 0 | "
                      "30.00 ± 0.00 | 31.00 ± 0.00 |  5.00 ± 0.00 | 0 |")
