r"""Frozen CLIP text embeddings of class prompts, computed once.

The train loop calls this for the object prompts ("A photo of a/an [object]")
and the interaction prompts, and keeps the [T, E] result as a constant model
input (contracts.md, Model), so the classes can be swapped at inference.

  emb = compute_text_embeddings(clip_params, config.model.clip,
                                metadata.hico().hoi_prompts())  # [600, 512]

While JAX's persistent compilation cache is on (`train/startup.py` points it
at `<workdir>/jax_cache`), the tower's outputs are kept beside it, in
`<cache>/text_tower/<sha256>.npy`, keyed by the architecture, dtype, token ids
and every parameter's bytes: a second run of a workdir (a resumed run, the
eval mode after training) reads them instead of running the tower again.
"""

import functools
import hashlib
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from ki2hoi_jax.clip import model as clip_model
from ki2hoi_jax.clip import tokenizer as clip_tokenizer


def text_params(clip_params: Mapping[str, Any]) -> dict:
  """The text-tower subtree of CLIP params (also accepts {'params': ...})."""
  if "params" in clip_params and len(clip_params) == 1:
    clip_params = clip_params["params"]
  missing = [k for k in clip_model.TEXT_KEYS if k not in clip_params]
  if missing:
    raise KeyError(f"CLIP params lack the text-tower entries {missing}; "
                   f"got {sorted(clip_params)}")
  return {k: clip_params[k] for k in clip_model.TEXT_KEYS}


# Token positions are cut after the last EOT of a prompt list (causal
# attention: the positions after EOT never reach it) and rounded up to a
# multiple of this, so that lists of similar lengths share one program.
_LENGTH_MULTIPLE = 8


def trim_token_ids(token_ids: np.ndarray) -> np.ndarray:
  """[T, L'] the ids up to the last EOT of any row, L' a multiple of 8.

  The EOT of a row is its largest id (`clip.model._text_forward`); the text
  tower gives the same embeddings for the trimmed ids, with L' / L of the
  work (HICO-DET's prompts: 16 of 77 positions).
  """
  token_ids = np.asarray(token_ids, np.int32)
  if token_ids.size == 0:
    return token_ids
  last = int(np.argmax(token_ids, axis=1).max()) + 1
  length = -(-last // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE
  return token_ids[:, :min(length, token_ids.shape[1])]


@functools.lru_cache(maxsize=None)
def _tower_function(cfg_items: Tuple[Tuple[str, Any], ...], dtype: str,
                    normalise: bool) -> Callable:
  """One jitted text tower per architecture and dtype, for every call."""
  module = clip_model.text_from_config(dict(cfg_items), dtype)

  @jax.jit
  def embed(params, ids):
    x = module.apply({"params": params}, ids).astype(jnp.float32)
    if normalise:
      x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x

  return embed


def cache_folder() -> Optional[str]:
  """JAX's persistent compilation cache folder (None: the cache is off)."""
  return jax.config.values.get("jax_compilation_cache_dir") or None


def cache_path(params: Mapping[str, Any], key: Tuple[Any, ...],
               token_ids: np.ndarray) -> Optional[str]:
  """Where the outputs of the tower `params` on `token_ids` are cached.

  None while JAX's persistent compilation cache is off. `key` holds the
  other inputs of the outputs (architecture, dtype, normalisation); the
  parameters enter the sha256 with their paths, dtypes, shapes and bytes.
  """
  folder = cache_folder()
  if not folder:
    return None
  digest = hashlib.sha256(repr((key, token_ids.shape)).encode())
  digest.update(np.ascontiguousarray(token_ids, np.int32).tobytes())
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  for name in sorted(flat):
    leaf = np.ascontiguousarray(flat[name])
    digest.update(repr((name, leaf.dtype.str, leaf.shape)).encode())
    digest.update(leaf.reshape(-1).view(np.uint8))
  return os.path.join(folder, "text_tower", digest.hexdigest() + ".npy")


def _tower_outputs(params: Mapping[str, Any], clip_cfg,
                   token_ids: np.ndarray, batch: int, dtype: Any,
                   normalise: bool) -> np.ndarray:
  """[T, E] float32 outputs of the text tower, `batch` prompts a call.

  Read from, or written to, `cache_path` when the compilation cache is on.
  """
  token_ids = trim_token_ids(token_ids)
  num = token_ids.shape[0]
  if num == 0:
    return np.zeros((0, int(clip_cfg["embed_dim"])), np.float32)
  cfg_items = tuple(sorted(
      (k, clip_cfg[k]) for k in ("context_length", "vocab_size", "text_width",
                                 "text_layers", "text_heads", "embed_dim")))
  dtype_name = jnp.dtype(dtype).name
  path = cache_path(params, (cfg_items, dtype_name, normalise), token_ids)
  if path and os.path.isfile(path):
    wanted = (num, int(clip_cfg["embed_dim"]))
    try:
      out = np.load(path)
    except (OSError, ValueError) as e:
      out = e
    if getattr(out, "shape", None) == wanted and out.dtype == np.float32:
      return out
    logging.warning("Running the text tower again: the cached %s is not a "
                    "float32 %s array (%s).", path, wanted,
                    getattr(out, "shape", out))
  out = _run_tower(_tower_function(cfg_items, dtype_name, normalise), params,
                   token_ids, batch)
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial.npy"
    np.save(partial, out)
    os.replace(partial, path)  # Whole files only, for concurrent runs.
  return out


def _run_tower(embed: Callable, params: Mapping[str, Any],
               token_ids: np.ndarray, batch: int) -> np.ndarray:
  """[T, E] `embed(params, ids)` over `batch` rows a call (last one padded)."""
  num = token_ids.shape[0]
  batch = max(1, min(batch, num))
  pad = (-num) % batch
  # Padding rows: SOT, EOT (valid ids, discarded afterwards).
  filler = np.zeros((pad, token_ids.shape[1]), np.int32)
  if pad:
    filler[:, 0] = token_ids[0, 0]
    filler[:, 1] = token_ids.max()
  ids = np.concatenate([token_ids, filler])
  outs = [np.asarray(embed(params, ids[i:i + batch]))
          for i in range(0, ids.shape[0], batch)]
  return np.concatenate(outs)[:num]


def compute_text_embeddings(clip_params: Mapping[str, Any], clip_cfg,
                            prompts: Sequence[str], batch: int = 128,
                            tokenizer_dir: str = "",
                            dtype: Any = jnp.float32,
                            token_ids: Optional[np.ndarray] = None
                            ) -> np.ndarray:
  """L2-normalised CLIP text embeddings of `prompts`.

  Args:
    clip_params: CLIP parameter tree (the `CLIP` module's params, or only the
      text subtree); only the text tower is used.
    clip_cfg: `config.model.clip` (architecture and context length).
    prompts: T texts.
    batch: prompts per compiled call (the last call is padded), so one
      compilation serves any T (of the same trimmed length,
      `trim_token_ids`; one jitted tower serves every call of the process).
    tokenizer_dir: '' = packaged BPE vocabulary, else a transformers folder.
    dtype: compute dtype of the text tower.
    token_ids: optional precomputed [T, L] ids (skips tokenisation).

  Returns:
    [T, E] float32 numpy array with unit-norm rows.
  """
  if token_ids is None:
    token_ids = clip_tokenizer.tokenize(
        list(prompts), int(clip_cfg["context_length"]), tokenizer_dir)
  return _tower_outputs(text_params(clip_params), clip_cfg, token_ids, batch,
                        dtype, normalise=True)


def text_tower_params(config, rng: Optional[jax.Array] = None) -> dict:
  """CLIP text-tower params: from `config.init.clip_checkpoint`, else random.

  Args:
    config: the experiment config (`init.clip_checkpoint`, `model.clip`,
      `seed`, `model.prompt_style`).
    rng: key of the random initialisation (default: `PRNGKey(config.seed)`,
      the tower the trainer and `predict` use).

  Returns:
    The text subtree (token_embedding, positional_embedding, transformer,
    ln_final, text_projection).
  """
  from ki2hoi_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  cfg = config.model.clip
  if config.init.clip_checkpoint:
    return text_params(pretrained.load_clip_params(
        config.init.clip_checkpoint, cfg))
  if rng is None:
    rng = jax.random.PRNGKey(int(config.seed))
  module = clip_model.text_from_config(cfg)
  ids = jnp.zeros((1, int(cfg["context_length"])), jnp.int32)
  params = jax.jit(module.init)(rng, ids)["params"]
  return _centre_random_tower(cfg, params, config.init.tokenizer_dir,
                              config.model.prompt_style)


def _centre_random_tower(clip_cfg, params, tokenizer_dir: str = "",
                         prompt_style: str = "gerund") -> dict:
  """Makes a random text tower's embeddings of template prompts distinct.

  A randomly initialised tower maps prompts that share a template to nearly
  parallel vectors (mean pairwise cosine 0.94 over the 600 HICO-DET HOI
  prompts for the demo tower), which leaves the cosine classifiers built on
  them almost nothing to tell classes apart by. The stand-in therefore
  shifts `ln_final.bias` so that the tower's output, averaged over the
  HICO-DET HOI, verb and object prompt families (each family's mean weighted
  equally; HOI and verb prompts in the run's `model.prompt_style`), is zero
  (least squares through `text_projection`, exact when W >= E). The demo
  tower's mean pairwise cosine is then 0.26 for HOI prompts, 0.44 for verb
  and 0.35 for object prompts (gerund; bare: 0.28, 0.46, 0.35). The shift is
  part of the parameters, so every caller (trainer, predict, open vocabulary)
  sees the same tower. A converted CLIP checkpoint is used unchanged.

  Args:
    clip_cfg: `config.model.clip`, the tower's architecture.
    params: its random params.
    tokenizer_dir: as in `compute_text_embeddings`.
    prompt_style: style of the HOI and verb prompt families
      (`config.model.prompt_style`, `metadata.hoi_prompt`).

  Returns:
    params with the shifted `ln_final.bias`.
  """
  from ki2hoi_jax.data import metadata  # pylint: disable=g-import-not-at-top
  hico = metadata.hico()
  families = (hico.hoi_prompts(prompt_style), hico.verb_prompts(prompt_style),
              hico.object_prompts())
  ids = clip_tokenizer.tokenize(sum(families, []),
                                int(clip_cfg["context_length"]), tokenizer_dir)
  out = _tower_outputs(params, clip_cfg, ids, 128, jnp.float32,
                       normalise=False).astype(np.float64)
  ends = np.cumsum([len(f) for f in families])
  mean = np.mean([part.mean(axis=0) for part in np.split(out, ends[:-1])],
                 axis=0)  # [E]
  projection = np.asarray(params["text_projection"], np.float64)  # [W, E]
  shift = np.linalg.lstsq(projection.T, mean, rcond=None)[0]  # [W]
  params = flax.core.unfreeze(params)
  bias = params["ln_final"]["bias"]
  params["ln_final"]["bias"] = (np.asarray(bias, np.float64) - shift
                                ).astype(bias.dtype)
  return params


def prompt_embeddings(config, prompts: Sequence[str],
                      params: Optional[Mapping[str, Any]] = None,
                      rng: Optional[jax.Array] = None) -> np.ndarray:
  """[T, E] L2-normalised embeddings of prompts for `config`'s CLIP.

  Args:
    config: the experiment config (uses `model.clip`, `model.frozen_dtype`,
      `init.clip_checkpoint`, `init.tokenizer_dir`).
    prompts: T texts.
    params: CLIP (text) params; default `text_tower_params(config, rng)`.
    rng: key of a random text tower when there is no checkpoint.
  """
  if params is None:
    params = text_tower_params(config, rng)
  return compute_text_embeddings(
      params, config.model.clip, prompts,
      tokenizer_dir=config.init.tokenizer_dir,
      dtype=jnp.dtype(config.model.frozen_dtype))


def clip_text_params(config) -> Dict[str, Any]:
  """The CLIP text-tower parameters the model was trained with.

  `config.init.clip_checkpoint` when set (converted OpenAI CLIP), else a
  random text tower initialised from `PRNGKey(config.seed)` (the demo; the
  trainer, evaluation and prediction build their text embeddings from the
  same parameters).

  Args:
    config: the run config (`init.clip_checkpoint`, `model.clip`, `seed`).

  Returns:
    The text subtree (`clip.model.TEXT_KEYS`) of the CLIP params.
  """
  if not config.init.clip_checkpoint:
    logging.warning("config.init.clip_checkpoint is empty: random CLIP text "
                    "tower; open-vocabulary prompts carry no meaning.")
  return flax.core.unfreeze(text_tower_params(config))


def class_embeddings(clip_params: Mapping[str, Any], config,
                     prompts: Sequence[str]) -> np.ndarray:
  """[T, E] float32 L2-normalised CLIP text embeddings of class prompts.

  The embeddings the trainer feeds the model and prediction swaps in (float32
  whatever `model.frozen_dtype`).

  Args:
    clip_params: CLIP params (or their text subtree).
    config: the run config (`model.clip`, `init.tokenizer_dir`).
    prompts: T texts.
  """
  return compute_text_embeddings(clip_params, config.model.clip,
                                 list(prompts),
                                 tokenizer_dir=config.init.tokenizer_dir)
