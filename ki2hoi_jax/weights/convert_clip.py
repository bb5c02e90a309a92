r"""Converts PyTorch CLIP weights to a Flax checkpoint for `ki2hoi_jax.clip`.

Sources:
* OpenAI's `ViT-B-32.pt` (a TorchScript archive, fp16 weights; the URL is in
  `_MODELS` of openai/CLIP `clip/clip.py`) or any plain OpenAI-layout state
  dict saved with `torch.save`;
* a transformers CLIP folder (`config.json` + `model.safetensors` or
  `pytorch_model.bin`, e.g. openai/clip-vit-base-patch32).

  python -m ki2hoi_jax.weights.convert_clip --source ViT-B-32.pt --out clip_vitb32.msgpack

writes `clip_vitb32.msgpack` (the `CLIP` module's params, float32) and
`clip_vitb32.msgpack.json` (the inferred `config.model.clip` fields). Point
`config.init.clip_checkpoint` at the msgpack file.

Layouts (OpenAI key -> Flax path; `ki2hoi_jax/clip/model.py` has the table):
conv OIHW -> HWIO, Linear [out, in] -> kernel [in, out], LayerNorm weight ->
scale, nn.Embedding weight -> embedding, fused `in_proj_weight` [3W, W] ->
`in_proj/kernel` [W, 3W]. transformers' split q/k/v projections are fused in
q, k, v order first.
"""

import glob
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.weights import pretrained

FORMAT = "ki2hoi_jax/clip"
# Non-parameter entries of OpenAI's archive (clip.model.build_model drops them).
_OPENAI_EXTRA = ("input_resolution", "context_length", "vocab_size")


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, dtype=np.float32)


def load_openai_state_dict(path: str) -> Dict[str, np.ndarray]:
  """OpenAI CLIP weights (TorchScript archive or torch.save'd dict), float32."""
  import torch  # pylint: disable=g-import-not-at-top
  try:
    state = torch.jit.load(path, map_location="cpu").state_dict()
  except RuntimeError:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
      if isinstance(state, Mapping) and key in state and isinstance(
          state[key], Mapping):
        state = state[key]
  state = {k[len("module."):] if k.startswith("module.") else k: v
           for k, v in state.items()}
  return {k: _to_numpy(v) for k, v in state.items()
          if k not in _OPENAI_EXTRA}


def load_hf_folder(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
  """A transformers CLIP folder's tensors (HF names, float32) and config."""
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  tensors = {}
  if files:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    for name in files:
      tensors.update(load_file(name))
  else:
    import torch  # pylint: disable=g-import-not-at-top
    files = sorted(glob.glob(os.path.join(path, "pytorch_model*.bin")))
    if not files:
      raise FileNotFoundError(f"No *.safetensors or pytorch_model*.bin in "
                              f"{path}")
    for name in files:
      tensors.update(torch.load(name, map_location="cpu", weights_only=True))
  return {k: _to_numpy(v) for k, v in tensors.items()}, config


_HF_LAYER = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def hf_to_openai(sd: Mapping[str, np.ndarray],
                 hf_config: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, np.ndarray]:
  """Renames a transformers CLIPModel state dict to OpenAI's keys.

  Args:
    sd: {hf name: array}.
    hf_config: the folder's config.json (checked for a QuickGELU, 4x-MLP
      architecture when given).

  Returns:
    {OpenAI name: array}, q/k/v fused into `in_proj_weight`/`in_proj_bias`.
  """
  if hf_config:
    for tower in ("text_config", "vision_config"):
      c = hf_config.get(tower, {})
      act = c.get("hidden_act", "quick_gelu")
      if act != "quick_gelu":
        raise ValueError(f"{tower}.hidden_act={act!r}; ki2hoi_jax CLIP uses "
                         "QuickGELU (OpenAI checkpoints).")
      if "intermediate_size" in c and "hidden_size" in c and (
          c["intermediate_size"] != 4 * c["hidden_size"]):
        raise ValueError(f"{tower}: intermediate_size must be 4*hidden_size")
  out = {}
  qkv = {}
  for key, value in sd.items():
    if key.endswith("position_ids"):
      continue
    m = re.fullmatch(
        r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)",
        key)
    if m:
      tower, layer, module, kind = m.groups()
      base = ("visual." if tower == "vision" else "") + (
          f"transformer.resblocks.{layer}.")
      q = re.fullmatch(r"self_attn\.([qkv])_proj", module)
      if q:
        qkv.setdefault((base, kind), {})[q.group(1)] = value
        continue
      if module not in _HF_LAYER:
        raise KeyError(f"Unknown transformers CLIP key {key}")
      out[base + _HF_LAYER[module] + "." + kind] = value
      continue
    simple = {
        "logit_scale": "logit_scale",
        "text_model.embeddings.token_embedding.weight":
            "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    if key in simple:
      out[simple[key]] = value
    elif key == "text_model.embeddings.position_embedding.weight":
      out["positional_embedding"] = value
    elif key == "vision_model.embeddings.position_embedding.weight":
      out["visual.positional_embedding"] = value
    elif key == "text_projection.weight":  # Linear [E, W] -> OpenAI [W, E].
      out["text_projection"] = value.T
    elif key == "visual_projection.weight":
      out["visual.proj"] = value.T
    else:
      raise KeyError(f"Unknown transformers CLIP key {key}")
  for (base, kind), parts in qkv.items():
    if sorted(parts) != ["k", "q", "v"]:
      raise KeyError(f"Incomplete q/k/v projections under {base}")
    out[f"{base}attn.in_proj_{kind}"] = np.concatenate(
        [parts["q"], parts["k"], parts["v"]], axis=0)
  return out


def _count_layers(sd: Mapping[str, Any], prefix: str) -> int:
  pat = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
  ids = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
  if ids != set(range(len(ids))):
    raise ValueError(f"Non-contiguous layers under {prefix!r}: {sorted(ids)}")
  return len(ids)


def infer_config(sd: Mapping[str, np.ndarray], vision_heads: int = 0,
                 text_heads: int = 0) -> Dict[str, int]:
  """`config.model.clip` fields from OpenAI-layout shapes (as build_model).

  Heads are not visible in the shapes: OpenAI uses width // 64; pass
  `vision_heads`/`text_heads` (> 0) to override.
  """
  for key in ("visual.conv1.weight", "visual.positional_embedding",
              "text_projection", "positional_embedding",
              "token_embedding.weight", "ln_final.weight"):
    if key not in sd:
      raise KeyError(f"{key} not in the state dict: not a ViT CLIP in "
                     "OpenAI layout (ResNet CLIP towers are not supported)")
  vision_width, _, patch_size, _ = sd["visual.conv1.weight"].shape
  grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
  if grid * grid + 1 != sd["visual.positional_embedding"].shape[0]:
    raise ValueError("visual.positional_embedding is not 1 + grid^2 long")
  text_width = sd["ln_final.weight"].shape[0]
  return {
      "image_size": int(grid * patch_size),
      "patch_size": int(patch_size),
      "vision_width": int(vision_width),
      "vision_layers": _count_layers(sd, "visual."),
      "vision_heads": int(vision_heads or vision_width // 64),
      "embed_dim": int(sd["text_projection"].shape[1]),
      "text_width": int(text_width),
      "text_layers": _count_layers(sd, ""),
      "text_heads": int(text_heads or text_width // 64),
      "context_length": int(sd["positional_embedding"].shape[0]),
      "vocab_size": int(sd["token_embedding.weight"].shape[0]),
  }


def _block(sd: Mapping[str, np.ndarray], prefix: str) -> Dict[str, Any]:
  """One resblock: OpenAI keys under `prefix` -> Flax subtree."""
  def dense(name):
    return {"kernel": sd[f"{prefix}{name}.weight"].T,
            "bias": sd[f"{prefix}{name}.bias"]}

  def norm(name):
    return {"scale": sd[f"{prefix}{name}.weight"],
            "bias": sd[f"{prefix}{name}.bias"]}
  return {
      "attn": {"in_proj": {"kernel": sd[f"{prefix}attn.in_proj_weight"].T,
                           "bias": sd[f"{prefix}attn.in_proj_bias"]},
               "out_proj": dense("attn.out_proj")},
      "ln_1": norm("ln_1"),
      "mlp": {"c_fc": dense("mlp.c_fc"), "c_proj": dense("mlp.c_proj")},
      "ln_2": norm("ln_2"),
  }


def openai_to_flax(sd: Mapping[str, np.ndarray],
                   config: Mapping[str, int]) -> Dict[str, Any]:
  """OpenAI-layout state dict -> `CLIP` params tree (float32 numpy).

  Raises:
    KeyError: a tensor is missing, or the state dict has entries that were
      not converted.
  """
  used = set()

  class Tracking(dict):

    def __getitem__(self, key):
      used.add(key)
      return dict.__getitem__(self, key)

  t = Tracking(sd)

  def norm(name):
    return {"scale": t[f"{name}.weight"], "bias": t[f"{name}.bias"]}

  visual = {
      "conv1": {"kernel": np.transpose(t["visual.conv1.weight"], (2, 3, 1, 0))},
      "class_embedding": t["visual.class_embedding"],
      "positional_embedding": t["visual.positional_embedding"],
      "ln_pre": norm("visual.ln_pre"),
      "transformer": {
          f"resblocks_{i}": _block(t, f"visual.transformer.resblocks.{i}.")
          for i in range(config["vision_layers"])},
      "ln_post": norm("visual.ln_post"),
      "proj": t["visual.proj"],
  }
  params = {
      "visual": visual,
      "token_embedding": {"embedding": t["token_embedding.weight"]},
      "positional_embedding": t["positional_embedding"],
      "transformer": {
          f"resblocks_{i}": _block(t, f"transformer.resblocks.{i}.")
          for i in range(config["text_layers"])},
      "ln_final": norm("ln_final"),
      "text_projection": t["text_projection"],
      "logit_scale": t["logit_scale"].reshape(()),
  }
  unused = sorted(set(sd) - used)
  if unused:
    raise KeyError(f"Unconverted state-dict entries: {unused[:20]}")
  return pretrained.unflatten(
      {k: np.array(v, np.float32, order="C")
       for k, v in pretrained.flatten(params).items()})


def load_source(source: str, vision_heads: int = 0, text_heads: int = 0
                ) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
  """Reads an OpenAI file or transformers folder: (OpenAI-layout sd, config)."""
  if os.path.isdir(source):
    hf_sd, hf_config = load_hf_folder(source)
    sd = hf_to_openai(hf_sd, hf_config)
    vision_heads = vision_heads or hf_config.get("vision_config", {}).get(
        "num_attention_heads", 0)
    text_heads = text_heads or hf_config.get("text_config", {}).get(
        "num_attention_heads", 0)
  else:
    sd = load_openai_state_dict(source)
  return sd, infer_config(sd, vision_heads, text_heads)


def convert(source: str, out: str, vision_heads: int = 0,
            text_heads: int = 0) -> Dict[str, int]:
  """Converts `source` and writes `out` (+ `out`.json). Returns the config."""
  sd, config = load_source(source, vision_heads, text_heads)
  params = openai_to_flax(sd, config)
  num = sum(int(np.prod(v.shape))
            for v in pretrained.flatten(params).values())
  pretrained.save_checkpoint(out, params, {
      "format": FORMAT, "source": os.path.abspath(source), "clip": config,
      "num_params": num, "covers": [""]})
  return config


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("source", None,
                      "OpenAI .pt file or transformers CLIP folder.",
                      required=True, flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output .msgpack path.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_integer("vision_heads", 0,
                       "Override (default: width // 64 or config.json).",
                       flag_values=flag_values)
  flags.DEFINE_integer("text_heads", 0,
                       "Override (default: width // 64 or config.json).",
                       flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  config = convert(args.source, args.out, args.vision_heads, args.text_heads)
  print(f"Wrote {args.out} and {pretrained.metadata_path(args.out)}")
  print("config.model.clip fields:")
  for k, v in config.items():
    print(f"  --config.model.clip.{k}={v}")
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.weights.convert_clip`, `ki2hoi-convert-clip`."""
  cli.run(main, user_errors=(OSError, ValueError))


if __name__ == "__main__":
  entry_point()
