r"""Contrastive pretraining of a small CLIP on a synthetic "web corpus".

KI2HOI detects interactions its training labels leave out by borrowing CLIP's
vision-language knowledge. Offline there is no OpenAI CLIP, so this module
makes a stand-in that *knows* what the detector is never taught: a CLIP of a
config's `model.clip` architecture (the demo's by default), trained with
CLIP's symmetric InfoNCE loss and a learnable temperature on captioned
images that the synthetic renderer draws from its own seed range:

  python -m ki2hoi_jax.clip.pretrain --out W/clip/synthetic_clip.msgpack \
      [--config configs/demo.py] [--steps 1500] [--batch_size 128] [--seed 0]

Corpus (`web_corpus`). Image i of seed s is `sample_image(default_rng([s,
WEB_SPLIT, i]))`; the HICO-format writer uses split ids 0 (train) and 1
(test), so the corpus never contains a detector training or test image, and
the held-out crops of the accuracy figure use `HELD_OUT_SPLIT`. Each image
gives
* one crop around each human-object pair (their union box, 10 % margin, made
  square), captioned with each of the pair's HOI prompts
  (`metadata.hoi_prompt`) and verb prompts (`metadata.verb_prompt`) -- the
  strings the detector embeds in the 'hoi' and 'verb' interaction spaces, in
  the config's `model.prompt_style` (a CLIP serves detectors of its own
  style);
* one crop of each object, captioned with its object prompt;
* the whole scene, as the detector's CLIP branch sees it (short side
  resized, centre crop), captioned with the prompts of all its pairs.
The corpus covers every HOI the renderer can draw, including those unseen in
each zero-shot split, as OpenAI's web data covers HICO-DET's vocabulary; the
detector's training labels stay filtered as before.

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

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import tqdm

from ki2hoi_jax.clip import model as clip_model
from ki2hoi_jax.clip import tokenizer as clip_tokenizer
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes
from ki2hoi_jax.weights import convert_clip
from ki2hoi_jax.weights import pretrained

WEB_SPLIT = 2  # Seed-sequence split id of the corpus (writer: 0, 1).
HELD_OUT_SPLIT = 3  # Split id of the held-out crops of the accuracy figure.
_CLIP_MEAN = np.asarray((0.48145466, 0.4578275, 0.40821073), np.float32)
_CLIP_STD = np.asarray((0.26862954, 0.26130258, 0.27577711), np.float32)
_MARGIN = 0.1  # Crop margin around a box, as a fraction of its larger side.


@dataclasses.dataclass
class Corpus:
  """Captioned images.

  Attributes:
    images: [N, S, S, 3] uint8.
    kinds: [N] 'pair' | 'object' | 'scene'.
    captions: the distinct captions, C of them.
    targets: [N, C] bool, True where caption c describes image n.
    hoi: [N] int, the pair's HOI index in `renderer_hois()` (-1 if none).
    obj: [N] int, the object's index in `renderer_objects()` (-1 if none).
  """
  images: np.ndarray
  kinds: np.ndarray
  captions: List[str]
  targets: np.ndarray
  hoi: np.ndarray
  obj: np.ndarray


def renderer_hois() -> List[Tuple[str, str]]:
  """(verb, object) of every HOI the renderer draws (HICO-DET mode)."""
  meta = metadata.hico()
  out = []
  for h in synthetic_scenes.hoi_subset("hico_det"):
    v, o = meta.hois[h]
    out.append((meta.verbs[v], meta.objects[o]))
  return out


def renderer_objects() -> List[str]:
  """The object classes the renderer draws."""
  return sorted({o for _, o in renderer_hois()})


def _square_crop(pixels: np.ndarray, box: Sequence[float], size: int
                 ) -> np.ndarray:
  """A square crop around a box (margin, clipped at the border), resized."""
  h, w = pixels.shape[:2]
  x1, y1, x2, y2 = box
  side = max(x2 - x1, y2 - y1) * (1 + 2 * _MARGIN) + 1
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  left = int(np.clip(round(cx - side / 2), 0, max(0, w - side)))
  top = int(np.clip(round(cy - side / 2), 0, max(0, h - side)))
  right, bottom = min(w, left + int(side)), min(h, top + int(side))
  crop = Image.fromarray(pixels[top:bottom, left:right])
  return np.asarray(crop.resize((size, size), Image.BICUBIC))


def _scene_view(pixels: np.ndarray, size: int) -> np.ndarray:
  """Short side resized to `size`, centre crop (the detector's CLIP view)."""
  h, w = pixels.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image = Image.fromarray(pixels).resize((nw, nh), Image.BICUBIC)
  top, left = (nh - size) // 2, (nw - size) // 2
  return np.asarray(image)[top:top + size, left:left + size]


def _union(a, b):
  return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def pair_captions(verbs: Sequence[str], obj: str,
                  prompt_style: str = "gerund") -> List[str]:
  """The HOI and verb prompts of a pair with these verbs."""
  return ([metadata.hoi_prompt(v, obj, prompt_style) for v in verbs]
          + [metadata.verb_prompt(v, prompt_style) for v in verbs])


def web_corpus(seed: int, split: int, num_images: int, image_size: int,
               crop_size: int, progress: bool = False,
               prompt_style: str = "gerund") -> Corpus:
  """Draws the captioned crops of `num_images` renderer images.

  Args:
    seed: corpus seed.
    split: seed-sequence split id (`WEB_SPLIT` or `HELD_OUT_SPLIT`).
    num_images: renderer images to draw.
    image_size: their longest side (the demo's `synthetic_image_size`).
    crop_size: S, the CLIP input resolution.
    progress: show a progress bar.
    prompt_style: style of the HOI and verb captions
      (`config.model.prompt_style`).

  Returns:
    The Corpus (module docstring).
  """
  hoi_ids = {h: i for i, h in enumerate(renderer_hois())}
  obj_ids = {o: i for i, o in enumerate(renderer_objects())}
  images, kinds, caps, hois, objs = [], [], [], [], []
  for i in tqdm.trange(num_images, desc="corpus", disable=not progress):
    rng = np.random.default_rng([seed, split, i])
    pixels, groups = synthetic_scenes.sample_image(rng, image_size,
                                                   "hico_det")
    scene_caps = []
    for g in groups:
      t = g["template"]
      if g["object_box"] is None:
        continue
      verbs = t.hico_verbs
      pair = pair_captions(verbs, t.obj, prompt_style)
      scene_caps += pair
      images.append(_square_crop(pixels, _union(g["person_box"],
                                                g["object_box"]), crop_size))
      kinds.append("pair")
      caps.append(pair)
      hois.append(hoi_ids[(verbs[0], t.obj)])
      objs.append(obj_ids[t.obj])
      images.append(_square_crop(pixels, g["object_box"], crop_size))
      kinds.append("object")
      caps.append([metadata.object_prompt(t.obj)])
      hois.append(-1)
      objs.append(obj_ids[t.obj])
    if scene_caps:
      images.append(_scene_view(pixels, crop_size))
      kinds.append("scene")
      caps.append(scene_caps)
      hois.append(-1)
      objs.append(-1)
  captions = sorted({c for cs in caps for c in cs})
  index = {c: j for j, c in enumerate(captions)}
  targets = np.zeros((len(images), len(captions)), bool)
  for n, cs in enumerate(caps):
    targets[n, [index[c] for c in cs]] = True
  return Corpus(np.stack(images), np.asarray(kinds), captions, targets,
                np.asarray(hois), np.asarray(objs))


def normalise(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> CLIP-normalised float32."""
  return (images.astype(np.float32) / 255.0 - _CLIP_MEAN) / _CLIP_STD


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


def pretrain(clip_cfg, corpus: Corpus, *, steps: int, batch_size: int,
             seed: int, learning_rate: float = 1e-3, weight_decay: float = 0.1,
             tokenizer_dir: str = "", progress: bool = False
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
                                   normalise(corpus.images[idx]),
                                   corpus.targets[idx])
    losses.append(float(loss))
    bar.set_postfix(loss=f"{losses[-1]:.3f}")
  return jax.device_get(params), losses


def accuracy(params: Dict[str, Any], clip_cfg, corpus: Corpus,
             tokenizer_dir: str = "", prompt_style: str = "gerund"
             ) -> Dict[str, Dict[str, float]]:
  """Top-1 accuracy on held-out crops among the renderer's prompts.

  The HOI prompts are in `prompt_style`, that of the corpus' captions.

  Returns:
    {'hoi': {...}, 'object': {...}}, each with `accuracy` (%), `chance` (%:
    the expected accuracy of a uniform guess among the prompts) and
    `num_crops`, `num_prompts`. A pair crop is correct when the best HOI
    prompt is one of its HOIs ("carry" scenes also show "hold").
  """
  model = clip_model.clip_from_config(clip_cfg)
  ctx = int(clip_cfg["context_length"])
  hois, objects = renderer_hois(), renderer_objects()

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
        np.asarray(embed(normalise(corpus.images[sel][i:i + 256]), tokens))
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
      `dataset.synthetic_image_size`, `init.tokenizer_dir`).
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
  start = time.time()
  corpus = web_corpus(seed, WEB_SPLIT, num_images, size,
                      int(cfg.image_size), progress, style)
  held_out = web_corpus(seed, HELD_OUT_SPLIT, num_held_out, size,
                        int(cfg.image_size), progress, style)
  params, losses = pretrain(cfg, corpus, steps=steps, batch_size=batch_size,
                            seed=seed, learning_rate=learning_rate,
                            tokenizer_dir=config.init.tokenizer_dir,
                            progress=progress)
  figure = accuracy(params, cfg, held_out, config.init.tokenizer_dir, style)
  figure.update(prompt_style=style, steps=steps, batch_size=batch_size,
                seed=seed, num_images=num_images,
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
          "prompt_style": config.model.prompt_style}


def stale_settings(config, path: str) -> List[str]:
  """Why the synthetic CLIP at `path` does not serve `config` ([]: it does).

  Args:
    config: the run config (`init.synthetic_clip_*`, `seed`,
      `model.prompt_style`).
    path: the checkpoint; its settings are read from `accuracy_path(path)`.

  Returns:
    One entry per differing setting ('missing' when there is no figure).
  """
  try:
    with open(accuracy_path(path)) as f:
      made = json.load(f)
  except (OSError, ValueError):
    return ["missing"]
  stale = [f"{k} {made.get(k)!r} (wanted {v!r})"
           for k, v in _wanted_settings(config).items() if made.get(k) != v]
  if stale:
    logging.warning("Remaking the synthetic CLIP %s: %s.", path,
                    ", ".join(stale))
  return stale


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
  if jax.process_index() == 0 and stale_settings(config, path):
    figure = run(config, path, steps=int(init.synthetic_clip_steps),
                 batch_size=128, seed=int(config.seed),
                 num_images=int(init.synthetic_clip_images),
                 progress=bool(config.progress_bar))
    print(format_figure(figure), flush=True)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("synthetic_clip")
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


def _load_config(path: str):
  spec = importlib.util.spec_from_file_location("pretrain_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--out", required=True, help="output .msgpack path")
  parser.add_argument("--config", default=os.path.join(
      os.path.dirname(__file__), "..", "..", "configs", "demo.py"),
                      help="config file whose model.clip is trained")
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_images", type=int, default=2000,
                      help="renderer images of the corpus")
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  args = parser.parse_args(argv)
  config = _load_config(args.config)
  figure = run(config, args.out, steps=args.steps,
               batch_size=args.batch_size, seed=args.seed,
               num_images=args.num_images,
               learning_rate=args.learning_rate)
  print(format_figure(figure))
  print(f"Wrote {args.out}, {pretrained.metadata_path(args.out)} and "
        f"{accuracy_path(args.out)} ({figure['seconds']} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
