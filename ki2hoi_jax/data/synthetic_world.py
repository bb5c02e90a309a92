r"""The synthetic worlds described: the text of docs/synthetic_world.md.

  python -m ki2hoi_jax.data.synthetic_world --out docs/synthetic_world.md \
      [--world compositional]

writes what a world draws (objects, verbs, HOIs, long-tail frequencies), its
test split's expected unseen pairs and, per zero-shot setting, its drawn
unseen HOIs with their drawn seen relatives
(`synthetic_scenes.zero_shot_relatives`).
"""

from typing import Dict, List, Sequence

from absl import flags

from ki2hoi_jax import cli
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes as scenes

# Images of a synthetic training split and groups per image (1-3 groups drawn
# with probabilities 0.4, 0.35, 0.25) behind the expected counts.
NUM_TRAIN = 400
NUM_TEST = 400  # Test images of the synthetic Table I.
_GROUPS_PER_IMAGE = 0.4 * 1 + 0.35 * 2 + 0.25 * 3
RARE = 10  # HICO-DET's rare HOIs have fewer training instances.

_INTRO = """\
# The synthetic world '{world}'

Generated from the scene templates of `ki2hoi_jax/data/synthetic_scenes.py`
by `python -m ki2hoi_jax.data.synthetic_world --out docs/synthetic_world.md
--world {world}`; rerun it after changing them.

`--config.dataset.synthetic_world={world}` picks it (configs/demo.py and the
synthetic Table I do; training writes the dataset to
`<workdir>/synthetic_hico_det_{world}`), as does
`python -m ki2hoi_jax.data.synthetic --world {world}`; the config default
stays 'basic'. HICO-DET mode only.
"""


def expected_counts(world: str, num_images: int = NUM_TRAIN,
                    balanced: bool = False) -> Dict[int, float]:
  """Expected instances of each drawn HOI in `num_images` images.

  Counts follow the template weights, or with `balanced` every template
  alike (a balanced test split: `synthetic_scenes.balanced_test_split`);
  groups dropped for lack of room are not taken into account.

  Returns:
    {HOI index (0-based): expected number of annotated pairs}.
  """
  meta = metadata.hico()
  table = scenes.templates("hico_det", world)
  weights = [float(t.hico_weight > 0) if balanced else t.hico_weight
             for t in table]
  out: Dict[int, float] = {}
  for t, weight in zip(table, weights):
    if weight <= 0:
      continue
    share = weight / sum(weights) * num_images * _GROUPS_PER_IMAGE
    o = meta.objects.index(t.obj)
    for v in t.hico_verbs:
      h = meta.hoi_index(meta.verbs.index(v), o)
      out[h] = out.get(h, 0.0) + share
  return out


def _names(hois: Sequence[int]) -> str:
  meta = metadata.hico()
  return ", ".join(meta.hoi_name(h) for h in hois)


def world_markdown(world: str = "compositional") -> str:
  """The markdown text of docs/synthetic_world.md for `world`."""
  meta = metadata.hico()
  counts = expected_counts(world)
  by_object: Dict[str, List[str]] = {}
  for h in sorted(counts):
    by_object.setdefault(meta.objects[meta.hoi_object[h]], []).append(
        meta.verbs[meta.hoi_verb[h]])
  verbs = {v for vs in by_object.values() for v in vs}
  one_object = ("The groups of an image (1-3 people, each with an object) "
                "share their object class, as in HICO-DET, whose images were "
                "collected per HOI category; a zero-shot filter that removes "
                "an unseen object's pairs drops its images instead of "
                "leaving the object unlabelled beside seen pairs."
                if world in scenes.ONE_OBJECT_PER_IMAGE else "")
  lines = [_INTRO.format(world=world), "## What it draws", "",
           f"{len(counts)} HOIs of {len(by_object)} objects and {len(verbs)} "
           f"verbs (no_interaction included). {one_object}".rstrip(), "",
           "| object | verbs |", "| --- | --- |"]
  lines += [f"| {o} | {', '.join(vs)} |" for o, vs in sorted(
      by_object.items())]
  rare = sorted(h for h, c in counts.items() if c < RARE)
  top = max(counts, key=counts.get)
  lines += ["", f"Expected training instances in {NUM_TRAIN} images: from "
            f"{min(counts.values()):.1f} to {counts[top]:.0f} "
            f"({meta.hoi_name(top)}); {len(rare)} HOIs have fewer than "
            f"{RARE} (rare): {_names(rare)}.", "",
            "## Zero-shot settings", "",
            "Each drawn unseen HOI and its drawn seen relatives: HOIs seen "
            "in the setting that share its verb or its object (UO: its verb; "
            "UV: its object).", ""]
  if scenes.balanced_test_split(world):
    test = expected_counts(world, NUM_TEST, balanced=True)
    lines += [
        "The test split is class-balanced: its images draw every template "
        "alike (the training split draws them by their long-tailed "
        "weights), so the unseen HOIs, rare in training or not, have test "
        "pairs enough for their AP; rare and non-rare stay defined by the "
        "training counts, as in HICO-DET. Expected unseen test pairs in "
        f"{NUM_TEST} test images (the synthetic Table I's test split):", "",
        "| setting | unseen test pairs |", "| --- | --- |"]
    lines += [f"| {split} | {sum(test[h] for h in relatives):.0f} |"
              for split, relatives in scenes.zero_shot_relatives(world).items()]
    lines.append("")
  for split, relatives in scenes.zero_shot_relatives(world).items():
    unseen_objects = sorted({meta.objects[meta.hoi_object[h]]
                             for h in relatives})
    unseen_verbs = sorted({meta.verbs[meta.hoi_verb[h]] for h in relatives})
    extra = {"uo": f"; unseen objects: {', '.join(unseen_objects)}",
             "uv": f"; unseen verbs: {', '.join(unseen_verbs)}"}.get(split, "")
    lines += [f"### {split}", "", f"{len(relatives)} drawn unseen HOIs{extra}.",
              "", "| unseen HOI | seen relatives |", "| --- | --- |"]
    lines += [f"| {meta.hoi_name(h)} | {_names(r) or '(none)'} |"
              for h, r in relatives.items()]
    lines.append("")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("out", None, "Markdown file to write.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_enum("world", "compositional", scenes.WORLDS,
                    "World to describe.", flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name).

  Returns:
    The exit status, 0.
  """
  args = cli.parse_flags(argv, define_flags, __doc__)
  with open(args.out, "w") as f:
    f.write(world_markdown(args.world))
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.data.synthetic_world`."""
  cli.run(main, user_errors=(OSError,))


if __name__ == "__main__":
  entry_point()
