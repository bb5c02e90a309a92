r"""Converts a DETR-R50 checkpoint into KI2HOI's backbone and decoders.

Source: `detr-r50-e632da11.pth` (facebookresearch/detr README, "Model Zoo";
`torch.load(...)['model']`). What is taken, following GEN-VLKT's
`tools/convert_parameters.py` (it copies DETR's decoder into both of its
decoders and `bbox_embed` into both box heads):

  DETR key                                  KI2HOI variables path
  backbone.0.body.conv1.weight [O,I,7,7]    params/backbone/conv1/kernel [7,7,I,O]
  backbone.0.body.bn1.{weight,bias,         frozen_bn/backbone/bn1/{weight,bias,
      running_mean,running_var}                 running_mean,running_var}
  backbone.0.body.layer{s}.{i}.{conv,bn}{k} .../backbone/layer{s}_{i}/{conv,bn}{k}
  backbone.0.body.layer{s}.0.downsample.{0,1}  .../layer{s}_0/downsample_{0,1}
  input_proj.{weight,bias}                  params/input_proj/{kernel,bias}
  transformer.decoder.layers.{i}.*          params/instance_interactor/layers_{i}/*
                                            (and interaction_decoder/layers_{i}/*
                                            where shapes match)
      self_attn.in_proj_weight [3D, D]      self_attn/{q,k,v}_proj/kernel [D, D]
      self_attn.out_proj, multihead_attn.*, same names (kernels transposed)
      linear1, linear2, norm{1,2,3}         (LayerNorm weight -> scale)
  transformer.decoder.norm                  instance_interactor/norm (+ interaction)
  bbox_embed.layers.{j}                     instance_interactor/{sub,obj}_bbox_embed/layers_{j}

Decoder layer i of KI2HOI gets DETR's layer i (DETR has 6). DETR's encoder,
`class_embed` (COCO classes; the object classifier is CLIP-initialised) and
`query_embed` are not used.

The target names and shapes come from the model built from `--config`
(`jax.eval_shape`, nothing is computed); tensors whose shape differs are
skipped and reported.

  python -m ki2hoi_jax.weights.convert_detr --source detr-r50-e632da11.pth \
      --out detr_r50.msgpack [--config configs/default.py]

writes `detr_r50.msgpack` (a variables tree: `params` + `frozen_bn`),
`detr_r50.msgpack.json` (metadata, incl. the strictly covered subtrees) and
`detr_r50.msgpack.report.txt` (initialised vs. left-random parameters). Point
`config.init.detr_checkpoint` at the msgpack file.
"""

import collections
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.weights import pretrained

FORMAT = "ki2hoi_jax/detr"
BACKBONE_PREFIX = "backbone.0.body."
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")
# Subtrees taken whole: strict loading reports any missing tensor under them.
WHOLE_SUBTREES = ("params/backbone", "frozen_bn/backbone", "params/input_proj")


def load_detr_state_dict(path: str) -> Dict[str, np.ndarray]:
  """DETR checkpoint -> {key: float32 array} (its 'model' entry)."""
  import argparse as _argparse  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  # DETR checkpoints also pickle the training `args` (argparse.Namespace).
  with torch.serialization.safe_globals([_argparse.Namespace]):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
  state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else ckpt
  return {k: v.detach().cpu().float().numpy() for k, v in state.items()
          if hasattr(v, "detach")}


def _backbone(sd: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """ResNet body (conv kernels to params, frozen BN to frozen_bn)."""
  out = {}
  for key, value in sd.items():
    if not key.startswith(BACKBONE_PREFIX) or key.endswith(
        "num_batches_tracked"):
      continue
    parts = key[len(BACKBONE_PREFIX):].split(".")
    leaf, modules = parts[-1], parts[:-1]
    path = []
    j = 0
    while j < len(modules):  # layer1.0 -> layer1_0; downsample.1 -> _1.
      if j + 1 < len(modules) and modules[j + 1].isdigit():
        path.append(f"{modules[j]}_{modules[j + 1]}")
        j += 2
      else:
        path.append(modules[j])
        j += 1
    name = "/".join(path)
    if value.ndim == 4 and leaf == "weight":
      out[f"params/backbone/{name}/kernel"] = value.transpose(2, 3, 1, 0)
    elif leaf in _BN_LEAVES and value.ndim == 1:
      out[f"frozen_bn/backbone/{name}/{leaf}"] = value
    else:
      raise KeyError(f"Unexpected backbone tensor {key} {value.shape}")
  if not out:
    raise KeyError(f"No {BACKBONE_PREFIX}* tensors: not a DETR checkpoint?")
  return out


def _dense(sd, key):
  return {"kernel": sd[key + ".weight"].T, "bias": sd[key + ".bias"]}


def _norm(sd, key):
  return {"scale": sd[key + ".weight"], "bias": sd[key + ".bias"]}


def _attention(sd, key) -> Dict[str, Any]:
  w, b = sd[key + ".in_proj_weight"], sd[key + ".in_proj_bias"]
  d = w.shape[1]
  out = {f"{n}_proj": {"kernel": w[i * d:(i + 1) * d].T,
                       "bias": b[i * d:(i + 1) * d]}
         for i, n in enumerate("qkv")}
  out["out_proj"] = _dense(sd, key + ".out_proj")
  return out


def decoder_layer(sd: Mapping[str, np.ndarray], i: int) -> Dict[str, Any]:
  """DETR decoder layer i as a Flax `DecoderLayer` subtree."""
  key = f"transformer.decoder.layers.{i}"
  return {
      "self_attn": _attention(sd, key + ".self_attn"),
      "multihead_attn": _attention(sd, key + ".multihead_attn"),
      "linear1": _dense(sd, key + ".linear1"),
      "linear2": _dense(sd, key + ".linear2"),
      "norm1": _norm(sd, key + ".norm1"),
      "norm2": _norm(sd, key + ".norm2"),
      "norm3": _norm(sd, key + ".norm3"),
  }


def num_decoder_layers(sd: Mapping[str, Any]) -> int:
  ids = {int(m.group(1)) for k in sd
         for m in [re.match(r"transformer\.decoder\.layers\.(\d+)\.", k)] if m}
  return len(ids)


def detr_to_flax(sd: Mapping[str, np.ndarray], instance_layers: int,
                 interaction_layers: int = 0
                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """Maps a DETR state dict to flat KI2HOI variable paths.

  Args:
    sd: DETR state dict (float32 numpy).
    instance_layers: instance interactor layers to fill (DETR layers 0..n-1).
    interaction_layers: interaction decoder layers to fill (0 = none).

  Returns:
    (flat {'collection/module/.../leaf': array}, {DETR key: why unused}).
  """
  flat = dict(_backbone(sd))
  flat.update({f"params/input_proj/{k}": v for k, v in {
      "kernel": sd["input_proj.weight"].transpose(2, 3, 1, 0),
      "bias": sd["input_proj.bias"]}.items()})
  available = num_decoder_layers(sd)
  tree = {"instance_interactor": {}, "interaction_decoder": {}}
  for name, n in (("instance_interactor", instance_layers),
                  ("interaction_decoder", interaction_layers)):
    if n > available:
      raise ValueError(f"{name} has {n} layers, DETR only {available}")
    for i in range(n):
      tree[name][f"layers_{i}"] = decoder_layer(sd, i)
    if n:
      tree[name]["norm"] = _norm(sd, "transformer.decoder.norm")
  mlp = {f"layers_{j}": _dense(sd, f"bbox_embed.layers.{j}")
         for j in range(3)}
  tree["instance_interactor"]["sub_bbox_embed"] = mlp
  tree["instance_interactor"]["obj_bbox_embed"] = mlp
  flat.update({f"params/{k}": v for k, v in
               pretrained.flatten(tree).items()})
  used_layers = max(instance_layers, interaction_layers)
  unused = {}
  for key in sd:
    if key.startswith("transformer.encoder."):
      unused[key] = "DETR encoder (KI2HOI uses the Ho-Pair Encoder)"
    elif key.startswith(("class_embed.", "query_embed.")):
      unused[key] = "COCO classifier / DETR queries (not used)"
    else:
      m = re.match(r"transformer\.decoder\.layers\.(\d+)\.", key)
      if m and int(m.group(1)) >= used_layers:
        unused[key] = "decoder layer beyond the model's depth"
  return flat, unused


def target_shapes(config) -> Dict[str, Tuple[int, ...]]:
  """Flat {'collection/...': shape} of the KI2HOI variables (no compute)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.models import ki2hoi  # pylint: disable=g-import-not-at-top
  model = ki2hoi.build_model(config)
  inputs = ki2hoi.dummy_inputs(config)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), *inputs, train=False))
  return {k: tuple(v.shape)
          for k, v in pretrained.flatten(variables).items()}


def _parent(name: str) -> str:
  return name.rsplit("/", 1)[0]


def select(flat: Mapping[str, np.ndarray], target: Mapping[str, Tuple[int, ...]]
           ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """Keeps tensors whose path and shape exist in the target.

  A module (e.g. a Dense layer) is taken whole or not at all: when its kernel
  does not fit, its bias is skipped too.
  """
  skipped = {}
  for name, value in sorted(flat.items()):
    if name not in target:
      skipped[name] = "no such parameter in the model"
    elif tuple(value.shape) != tuple(target[name]):
      skipped[name] = (f"shape {tuple(value.shape)} != model "
                       f"{tuple(target[name])}")
  bad_modules = {_parent(n) for n in skipped}
  kept = {}
  for name, value in sorted(flat.items()):
    if name in skipped:
      continue
    if _parent(name) in bad_modules:
      skipped[name] = "another tensor of its module does not fit"
    else:
      kept[name] = value
  return kept, skipped


def covered_subtrees(names: Sequence[str]) -> List[str]:
  """Subtrees the checkpoint defines completely (for strict loading)."""
  covers = {_parent(n) for n in names}
  covers.update(p for p in WHOLE_SUBTREES
                if any(n.startswith(p + "/") for n in names))
  return sorted(covers)


def format_report(target: Mapping[str, Tuple[int, ...]],
                  loaded: Sequence[str], skipped: Mapping[str, str],
                  unused: Mapping[str, str], depth: int = 3,
                  details: bool = True) -> str:
  """Text report: per module, tensors initialised from DETR vs left random.

  Args:
    target: flat model shapes.
    loaded: names initialised from DETR.
    skipped: converted names not written, with the reason.
    unused: DETR keys not converted, with the reason.
    depth: path components per summary line.
    details: also list every parameter left random.

  Returns:
    The report text.
  """
  loaded = set(loaded)
  groups = collections.OrderedDict()
  for name in sorted(target):
    group = "/".join(name.split("/")[:depth])
    done, total, size = groups.get(group, (0, 0, 0))
    hit = name in loaded
    groups[group] = (done + hit, total + 1,
                     size + (int(np.prod(target[name])) if hit else 0))
  lines = ["DETR -> KI2HOI conversion report",
           f"initialised {len(loaded)} of {len(target)} model tensors "
           f"({sum(int(np.prod(target[n])) for n in loaded):,} values)", "",
           "module: tensors initialised from DETR / total"]
  for group, (done, total, _) in groups.items():
    status = ("all" if done == total else "none" if done == 0 else "partial")
    lines.append(f"  {group}: {done}/{total} ({status})")
  random = [n for n in sorted(target) if n not in loaded]
  lines += ["", f"left as initialised by the model: {len(random)} tensors"]
  if details:
    lines += [f"  {n} {target[n]}" for n in random]
  if skipped:
    lines += ["", f"converted but skipped ({len(skipped)}):"]
    lines += [f"  {n}: {why}" for n, why in sorted(skipped.items())]
  reasons = collections.Counter(unused.values())
  if reasons:
    lines += ["", "DETR tensors not used:"]
    lines += [f"  {c} x {why}" for why, c in sorted(reasons.items())]
  return "\n".join(lines) + "\n"


def convert(source: str, out: str, config, interaction_decoder: bool = True,
            sd: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, Any]:
  """Converts DETR for the model of `config`; writes out, .json, .report.txt.

  Args:
    source: DETR .pth path (ignored when `sd` is given, except as a label).
    out: output .msgpack path.
    config: experiment config (model shapes and depths).
    interaction_decoder: also initialise the interaction decoder's matching
      tensors from DETR's decoder (GEN-VLKT does).
    sd: an already-loaded DETR state dict (tests).

  Returns:
    The metadata dict (also written to out.json).
  """
  m = config.model
  if m.backbone_norm != "frozen":
    raise ValueError("DETR's backbone uses frozen batch norm: convert for a "
                     "config with model.backbone_norm='frozen' (got "
                     f"{m.backbone_norm!r}).")
  if sd is None:
    sd = load_detr_state_dict(source)
  flat, unused = detr_to_flax(
      sd, int(m.instance_decoder_layers),
      int(m.interaction_decoder_layers) if interaction_decoder else 0)
  target = target_shapes(config)
  kept, skipped = select(flat, target)
  report = format_report(target, list(kept), skipped, unused)
  summary = format_report(target, list(kept), skipped, unused, details=False)
  meta = {
      "format": FORMAT,
      "source": os.path.abspath(source) if source else "",
      "covers": covered_subtrees(list(kept)),
      "initialised": sorted(kept),
      "skipped": skipped,
  }
  pretrained.save_checkpoint(out, pretrained.unflatten(kept), meta)
  with open(out + ".report.txt", "w") as f:
    f.write(report)
  meta["report"] = summary
  return meta


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("source", None, "DETR .pth file.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output .msgpack path.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_string("config", "",
                      "Config file of the target model (default: "
                      "ki2hoi_jax/config_lib/base.py, the paper model).",
                      flag_values=flag_values)
  flags.DEFINE_bool("no_interaction_decoder", False,
                    "Initialise only the instance interactor.",
                    flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.config_lib import base
  from ki2hoi_jax.config_lib import files
  # pylint: enable=g-import-not-at-top
  config = (files.load_config(args.config) if args.config
            else base.get_config())
  meta = convert(args.source, args.out, config,
                 interaction_decoder=not args.no_interaction_decoder)
  print(meta["report"])
  print(f"Wrote {args.out}, {pretrained.metadata_path(args.out)} and "
        f"{args.out}.report.txt")
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.weights.convert_detr`, `ki2hoi-convert-detr`."""
  cli.run(main, user_errors=(OSError, ValueError))


if __name__ == "__main__":
  entry_point()
