r"""Contrastive pretraining of a small CLIP on a synthetic "web corpus".

KI2HOI detects interactions its training labels leave out by borrowing CLIP's
vision-language knowledge. Offline there is no OpenAI CLIP, so this module
makes a stand-in that *knows* what the detector is never taught: a CLIP of a
config's `model.clip` architecture (the demo's by default), trained with
CLIP's symmetric InfoNCE loss and a learnable temperature on captioned
images that the synthetic renderer draws from its own seed range:

  python -m ki2hoi_jax.clip.pretrain --out W/clip/synthetic_clip.msgpack \
      [--config configs/demo.py] [--steps 1500] [--batch_size 128] [--seed 0]

Corpus (clip/corpus.py): crops of renderer images from seed ranges
disjoint from the detector's train and test images, around each
human-object pair (captioned with its HOI and verb prompts, the strings the
detector embeds), each object (its object prompt) and the whole scene (the
prompts of all its pairs). It covers every HOI the renderer can draw,
including those unseen in each zero-shot split, as OpenAI's web data covers
HICO-DET's vocabulary; the detector's training labels still leave the unseen
classes out.

Loss. Captions are not unique (many images show "a person holding a sports
ball"), so the InfoNCE targets are multi-positive: image -> text is a
softmax over every distinct caption of the corpus with the target spread
uniformly over the image's captions, text -> image a softmax over the batch's
images for every caption present in the batch, spread over the images it
describes. Their mean is the loss.

Output: `--out` (`.msgpack`) and `--out.json` in the format of
`ki2hoi_jax.weights.convert_clip`, so `config.init.clip_checkpoint` loads it
through the same strict path as a converted OpenAI checkpoint, plus
`<stem>.accuracy.json`: top-1 accuracy on held-out crops among the renderer's
HOI prompts and among its object prompts, with chance level beside each.
Deterministic for a seed.
"""

import json
import os
import time
from typing import Any, Dict, List, Sequence, Tuple

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from ki2hoi_jax import cli
from ki2hoi_jax.clip import corpus as corpus_lib
from ki2hoi_jax.clip import model as clip_model
from ki2hoi_jax.clip import tokenizer as clip_tokenizer
from ki2hoi_jax.config_lib import files
from ki2hoi_jax.data import metadata
from ki2hoi_jax.weights import convert_clip
from ki2hoi_jax.weights import pretrained


def contrastive_loss(image_emb: jnp.ndarray, text_emb: jnp.ndarray,
                     targets: jnp.ndarray, logit_scale: jnp.ndarray
                     ) -> jnp.ndarray:
  """Symmetric multi-positive InfoNCE (module docstring).

  Args:
    image_emb: [B, E] image embeddings (not normalised).
    text_emb: [C, E] embeddings of every distinct caption.
    targets: [B, C] bool, the captions of each image (>= 1 per row).
    logit_scale: log of the inverse temperature.

  Returns:
    Scalar loss.
  """
  img = image_emb / jnp.linalg.norm(image_emb, axis=-1, keepdims=True)
  txt = text_emb / jnp.linalg.norm(text_emb, axis=-1, keepdims=True)
  logits = jnp.exp(logit_scale) * img @ txt.T  # [B, C]
  t = targets.astype(jnp.float32)
  i2t = -jnp.sum(t / t.sum(1, keepdims=True)
                 * jax.nn.log_softmax(logits, axis=1), axis=1).mean()
  present = t.sum(0) > 0  # Captions of this batch.
  log_p = jax.nn.log_softmax(logits, axis=0)  # Over images, per caption.
  per_caption = -jnp.sum(t * log_p, axis=0) / jnp.maximum(t.sum(0), 1.0)
  t2i = jnp.sum(jnp.where(present, per_caption, 0.0)) / jnp.maximum(
      present.sum(), 1)
  return 0.5 * (i2t + t2i)


def pretrain(clip_cfg, corpus: corpus_lib.Corpus, *, steps: int,
             batch_size: int, seed: int, learning_rate: float = 1e-3,
             weight_decay: float = 0.1, tokenizer_dir: str = "", progress: bool = False
             ) -> Tuple[Dict[str, Any], List[float]]:
  """Trains a CLIP from scratch on the corpus.

  Args:
    clip_cfg: `config.model.clip` (architecture).
    corpus: the training corpus.
    steps: optimizer steps.
    batch_size: images per step.
    seed: init and batch-order seed.
    learning_rate: peak AdamW learning rate (linear warm-up over the first
      5 % of steps, then cosine decay).
    weight_decay: AdamW weight decay.
    tokenizer_dir: as `clip.tokenizer.tokenize`.
    progress: show a progress bar.

  Returns:
    (params of the CLIP module, the loss of every step).
  """
  model = clip_model.clip_from_config(clip_cfg)
  tokens = jnp.asarray(clip_tokenizer.tokenize(
      corpus.captions, int(clip_cfg["context_length"]), tokenizer_dir))
  key = jax.random.PRNGKey(seed)
  s = int(clip_cfg["image_size"])
  params = jax.jit(model.init)(key, jnp.zeros((1, s, s, 3)), tokens[:1])[
      "params"]
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, steps // 20), max(2, steps))
  # No weight decay on gains, biases, embeddings and the temperature.
  decay_mask = jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and "embedding" not in str(path), params)
  tx = optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, targets):
    def loss_fn(p):
      img = model.apply({"params": p}, images, method=model.encode_image)
      txt = model.apply({"params": p}, tokens, method=model.encode_text)
      return contrastive_loss(img, txt, targets, p["logit_scale"])
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    # CLIP clips the temperature at 100.
    params = dict(params, logit_scale=jnp.clip(params["logit_scale"], 0.0,
                                               np.log(100.0)))
    return params, opt_state, loss

  order_rng = np.random.default_rng([seed, 7])
  n = len(corpus.images)
  order, pos = order_rng.permutation(n), 0
  losses = []
  bar = tqdm.trange(steps, desc="clip pretrain", disable=not progress)
  for _ in bar:
    if pos + batch_size > n:
      order, pos = order_rng.permutation(n), 0
    idx = np.sort(order[pos:pos + batch_size])
    pos += batch_size
    params, opt_state, loss = step(params, opt_state,
                                   corpus_lib.normalise(corpus.images[idx]),
                                   corpus.targets[idx])
    losses.append(float(loss))
    bar.set_postfix(loss=f"{losses[-1]:.3f}")
  return jax.device_get(params), losses


def accuracy(params: Dict[str, Any], clip_cfg, corpus: corpus_lib.Corpus,
             tokenizer_dir: str = "", prompt_style: str = "gerund",
             world: str = "basic") -> Dict[str, Dict[str, float]]:
  """Top-1 accuracy on held-out crops among the renderer's prompts.

  The HOI prompts are in `prompt_style`, that of the corpus' captions; the
  prompts are those of the renderer's `world`, that of the corpus.

  Returns:
    {'hoi': {...}, 'object': {...}}, each with `accuracy` (%), `chance` (%:
    the expected accuracy of a uniform guess among the prompts) and
    `num_crops`, `num_prompts`. A pair crop is correct when the best HOI
    prompt is one of its HOIs ("carry" scenes also show "hold").
  """
  model = clip_model.clip_from_config(clip_cfg)
  ctx = int(clip_cfg["context_length"])
  hois = corpus_lib.renderer_hois(world)
  objects = corpus_lib.renderer_objects(world)

  @jax.jit
  def embed(images, tokens):
    img = model.apply({"params": params}, images, method=model.encode_image)
    txt = model.apply({"params": params}, tokens, method=model.encode_text)
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    return img @ txt.T

  out = {}
  for kind, prompts in (
      ("hoi", [metadata.hoi_prompt(v, o, prompt_style) for v, o in hois]),
      ("object", [metadata.object_prompt(o) for o in objects])):
    sel = corpus.kinds == ("pair" if kind == "hoi" else "object")
    tokens = jnp.asarray(clip_tokenizer.tokenize(prompts, ctx, tokenizer_dir))
    sims = np.concatenate([
        np.asarray(embed(corpus_lib.normalise(corpus.images[sel][i:i + 256]),
                         tokens))
        for i in range(0, int(sel.sum()), 256)])
    best = sims.argmax(1)
    if kind == "hoi":
      # Every HOI prompt that describes the crop counts as right.
      valid = np.stack([corpus.targets[sel][:, corpus.captions.index(p)]
                        if p in corpus.captions else
                        np.zeros(int(sel.sum()), bool) for p in prompts], 1)
    else:
      valid = np.eye(len(objects), dtype=bool)[corpus.obj[sel]]
    correct = valid[np.arange(len(best)), best]
    out[kind] = {"accuracy": 100.0 * float(correct.mean()),
                 "chance": 100.0 * float(valid.sum(1).mean() / len(prompts)),
                 "num_crops": int(sel.sum()), "num_prompts": len(prompts)}
  return out


def accuracy_path(out: str) -> str:
  """`<out without .msgpack>.accuracy.json`."""
  stem = out[:-len(".msgpack")] if out.endswith(".msgpack") else out
  return stem + ".accuracy.json"


def run(config, out: str, *, steps: int, batch_size: int, seed: int,
        num_images: int, num_held_out: int = 300,
        learning_rate: float = 1e-3, progress: bool = True
        ) -> Dict[str, Any]:
  """Corpus, pretraining, accuracy figure, files (the CLI's work).

  Args:
    config: a run config (`model.clip`, `model.prompt_style`,
      `dataset.synthetic_image_size`, `dataset.synthetic_world`,
      `init.tokenizer_dir`).
    out: output `.msgpack` path.
    steps: optimizer steps.
    batch_size: images per step.
    seed: corpus, init and batch-order seed.
    num_images: renderer images of the training corpus.
    num_held_out: renderer images of the held-out crops.
    learning_rate: peak learning rate.
    progress: progress bars.

  Returns:
    The accuracy figure (also written to `accuracy_path(out)`).
  """
  cfg = config.model.clip
  style = config.model.prompt_style
  size = int(config.dataset.synthetic_image_size)
  world = config.dataset.synthetic_world
  start = time.time()
  corpus = corpus_lib.web_corpus(seed, corpus_lib.WEB_SPLIT, num_images,
                                 size, int(cfg.image_size), progress, style,
                                 world)
  held_out = corpus_lib.web_corpus(seed, corpus_lib.HELD_OUT_SPLIT,
                                   num_held_out, size, int(cfg.image_size),
                                   progress, style, world)
  params, losses = pretrain(cfg, corpus, steps=steps, batch_size=batch_size,
                            seed=seed, learning_rate=learning_rate,
                            tokenizer_dir=config.init.tokenizer_dir,
                            progress=progress)
  figure = accuracy(params, cfg, held_out, config.init.tokenizer_dir, style,
                    world)
  figure.update(prompt_style=style, world=world, steps=steps,
                batch_size=batch_size, seed=seed, num_images=num_images,
                num_examples=len(corpus.images),
                num_captions=len(corpus.captions), final_loss=losses[-1],
                seconds=round(time.time() - start, 1))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  num = sum(int(np.prod(v.shape))
            for v in pretrained.flatten(params).values())
  pretrained.save_checkpoint(out, params, {
      "format": convert_clip.FORMAT, "clip": clip_model.clip_kwargs(cfg),
      "covers": [""],
      "num_params": num,
      "source": (f"ki2hoi_jax.clip.pretrain: synthetic web corpus, seed "
                 f"{seed}, {num_images} images, {steps} steps, {style} "
                 f"prompts")})
  with open(accuracy_path(out), "w") as f:
    json.dump(figure, f, indent=1)
  return figure


def _wanted_settings(config) -> Dict[str, Any]:
  return {"steps": int(config.init.synthetic_clip_steps),
          "num_images": int(config.init.synthetic_clip_images),
          "seed": int(config.seed),
          "prompt_style": config.model.prompt_style,
          "world": config.dataset.synthetic_world}


def stale_settings(config, path: str) -> List[str]:
  """Why the synthetic CLIP at `path` does not serve `config` ([]: it does).

  Its settings (`init.synthetic_clip_*`, `seed`, `model.prompt_style`,
  `dataset.synthetic_world`) are read from `accuracy_path(path)`
  (`pretrained.stale_settings`).
  """
  return pretrained.stale_settings(accuracy_path(path),
                                   _wanted_settings(config),
                                   f"synthetic CLIP {path}")


def ensure_synthetic_clip(config, workdir: str) -> None:
  """Points `init.clip_checkpoint` at the workdir's synthetic CLIP.

  With `config.init.synthetic_clip_steps > 0` and an empty
  `init.clip_checkpoint` (a user's own checkpoint always wins), the CLIP is
  pretrained once into `<workdir>/clip/synthetic_clip.msgpack` (`run`, seed
  `config.seed`) and reused by every later mode and run; a file left
  incomplete by a killed run (no accuracy figure yet, it is written last), or
  one made with other settings (steps, corpus images, seed, prompt style:
  `stale_settings`), is made again. Other processes of a multi-host run wait
  for process 0.

  Args:
    config: the run config (changed in place).
    workdir: the run's workdir.
  """
  init = config.init
  if init.clip_checkpoint or init.synthetic_clip_steps <= 0:
    return
  path = os.path.join(workdir, "clip", "synthetic_clip.msgpack")

  def make():
    figure = run(config, path, steps=int(init.synthetic_clip_steps),
                 batch_size=128, seed=int(config.seed),
                 num_images=int(init.synthetic_clip_images),
                 progress=bool(config.progress_bar))
    print(format_figure(figure), flush=True)

  pretrained.make_once(accuracy_path(path), _wanted_settings(config),
                       f"synthetic CLIP {path}", make)
  init.clip_checkpoint = path


def format_figure(figure: Dict[str, Any]) -> str:
  """The accuracy figure as a small table."""
  lines = ["CLIP top-1 on held-out crops   accuracy   chance   crops  prompts"]
  for kind in ("hoi", "object"):
    r = figure[kind]
    lines.append(f"  among {kind + ' prompts':<22} {r['accuracy']:7.1f} % "
                 f"{r['chance']:6.1f} % {r['num_crops']:7d} "
                 f"{r['num_prompts']:8d}")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("out", None, "Output .msgpack path.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_string("config", os.path.join(
      os.path.dirname(__file__), "..", "..", "configs", "demo.py"),
                      "Config file whose model.clip is trained.",
                      flag_values=flag_values)
  flags.DEFINE_integer("steps", 1500, "Optimizer steps.",
                       flag_values=flag_values)
  flags.DEFINE_integer("batch_size", 128, "Images per step.",
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Corpus, init and batch-order seed.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_images", 2000, "Renderer images of the corpus.",
                       flag_values=flag_values)
  flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.",
                     flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  config = files.load_config(args.config)
  figure = run(config, args.out, steps=args.steps,
               batch_size=args.batch_size, seed=args.seed,
               num_images=args.num_images,
               learning_rate=args.learning_rate)
  print(format_figure(figure))
  print(f"Wrote {args.out}, {pretrained.metadata_path(args.out)} and "
        f"{accuracy_path(args.out)} ({figure['seconds']} s)")
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.clip.pretrain` and `ki2hoi-pretrain-clip`."""
  cli.run(main, user_errors=(OSError,))


if __name__ == "__main__":
  entry_point()
