"""Converters: tiny random PyTorch references vs the converted Flax forward.

(a) a transformers CLIPModel saved with save_pretrained; (b) an OpenAI-layout
CLIP written here in PyTorch; (c) a DETR-layout ResNet-50 with frozen BN;
(d) a full-size ViT-B/32 state dict (shapes only) against `jax.eval_shape` of
the paper CLIP; (e) real files when KI2HOI_CLIP_PT / KI2HOI_DETR_PTH are set.
"""

import collections
import copy
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from ki2hoi_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
from ki2hoi_jax.clip import model as clip_model  # pylint: disable=g-import-not-at-top
from ki2hoi_jax.weights import convert_clip  # pylint: disable=g-import-not-at-top
from benchmarks import torch_resnet  # pylint: disable=g-import-not-at-top

TOL = 1e-4

torch.manual_seed(0)
torch.set_num_threads(1)


def _token_ids(rng, num, length, vocab, eot_positions):
  """Random ids < vocab-2 with SOT=vocab-2 first and EOT=vocab-1 (the max)."""
  ids = np.zeros((num, length), np.int64)
  for i, e in enumerate(eot_positions):
    ids[i, 0] = vocab - 2
    ids[i, 1:e] = rng.integers(1, vocab - 2, e - 1)
    ids[i, e] = vocab - 1
  return ids


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float32) -
                             np.asarray(b, np.float32))))


# --------------------------------------------------------------- (a) HF CLIP


def test_transformers_clip_parity(tmp_path):
  from transformers import CLIPConfig, CLIPModel  # pylint: disable=g-import-not-at-top
  vocab, context = 100, 12
  cfg = CLIPConfig(
      text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=context, bos_token_id=vocab - 2,
                       eos_token_id=vocab - 1, pad_token_id=0),
      vision_config=dict(hidden_size=48, intermediate_size=192,
                         num_hidden_layers=2, num_attention_heads=3,
                         image_size=32, patch_size=8),
      projection_dim=24)
  torch.manual_seed(1)
  ref = CLIPModel(cfg).eval()
  with torch.no_grad():  # Non-trivial LayerNorms and logit scale.
    for name, p in ref.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
    ref.logit_scale.fill_(2.0)
  ref.save_pretrained(str(tmp_path / "hf"))
  out = str(tmp_path / "clip.msgpack")
  config = convert_clip.convert(str(tmp_path / "hf"), out)
  assert config == dict(image_size=32, patch_size=8, vision_width=48,
                        vision_layers=2, vision_heads=3, embed_dim=24,
                        text_width=32, text_layers=2, text_heads=4,
                        context_length=context, vocab_size=vocab)
  params, meta = pretrained.load_checkpoint(out)
  assert meta["clip"] == config and meta["format"] == "ki2hoi_jax/clip"

  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  ids = _token_ids(rng, 3, context, vocab, [3, 7, context - 1])
  with torch.no_grad():
    vis = ref.vision_model(pixel_values=torch.from_numpy(
        images.transpose(0, 3, 1, 2)))
    ref_tokens = ref.vision_model.post_layernorm(vis.last_hidden_state)
    ref_img = ref.visual_projection(vis.pooler_output)
    txt = ref.text_model(input_ids=torch.from_numpy(ids))
    ref_txt = ref.text_projection(txt.pooler_output)

  model = clip_model.CLIP.from_config(config)
  variables = {"params": params}
  tokens, img = model.apply(variables, images,
                            method=lambda m, x: m.visual(x))
  text = model.apply(variables, jnp.asarray(ids, jnp.int32),
                     method=model.encode_text)
  assert tokens.shape == (2, 1 + 16, 48) and img.shape == (2, 24)
  assert _max_diff(tokens, ref_tokens.numpy()) <= TOL
  assert _max_diff(img, ref_img.numpy()) <= TOL
  assert _max_diff(text, ref_txt.numpy()) <= TOL
  assert float(params["logit_scale"]) == pytest.approx(2.0)


# ------------------------------------------------- (b) OpenAI layout in torch


class _QuickGELU(nn.Module):

  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
  """OpenAI ResidualAttentionBlock (pre-LN, nn.MultiheadAttention)."""

  def __init__(self, width, heads, attn_mask=None):
    super().__init__()
    self.attn = nn.MultiheadAttention(width, heads)
    self.ln_1 = nn.LayerNorm(width)
    self.mlp = nn.Sequential(collections.OrderedDict([
        ("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()),
        ("c_proj", nn.Linear(width * 4, width))]))
    self.ln_2 = nn.LayerNorm(width)
    self.attn_mask = attn_mask

  def forward(self, x):  # x: [L, N, W] (sequence first, as OpenAI).
    y = self.ln_1(x)
    x = x + self.attn(y, y, y, need_weights=False,
                      attn_mask=self.attn_mask)[0]
    return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):

  def __init__(self, width, layers, heads, attn_mask=None):
    super().__init__()
    self.resblocks = nn.Sequential(
        *[_Block(width, heads, attn_mask) for _ in range(layers)])

  def forward(self, x):
    return self.resblocks(x)


class _Visual(nn.Module):
  """OpenAI VisionTransformer; returns (all tokens after ln_post, embedding)."""

  def __init__(self, resolution, patch, width, layers, heads, out_dim):
    super().__init__()
    scale = width ** -0.5
    self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
    self.class_embedding = nn.Parameter(scale * torch.randn(width))
    self.positional_embedding = nn.Parameter(
        scale * torch.randn((resolution // patch) ** 2 + 1, width))
    self.ln_pre = nn.LayerNorm(width)
    self.transformer = _Transformer(width, layers, heads)
    self.ln_post = nn.LayerNorm(width)
    self.proj = nn.Parameter(scale * torch.randn(width, out_dim))

  def forward(self, x):
    x = self.conv1(x).flatten(2).permute(0, 2, 1)
    cls = self.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + self.positional_embedding
    x = self.ln_pre(x).permute(1, 0, 2)
    x = self.transformer(x).permute(1, 0, 2)
    tokens = self.ln_post(x)
    return tokens, tokens[:, 0] @ self.proj


class _OpenAICLIP(nn.Module):
  """Independent re-implementation of OpenAI's CLIP (ViT) for the test."""

  def __init__(self, embed_dim, resolution, v_layers, v_width, patch,
               context, vocab, t_width, t_heads, t_layers):
    super().__init__()
    self.visual = _Visual(resolution, patch, v_width, v_layers, v_width // 64,
                          embed_dim)
    mask = torch.full((context, context), float("-inf")).triu_(1)
    self.transformer = _Transformer(t_width, t_layers, t_heads, mask)
    self.token_embedding = nn.Embedding(vocab, t_width)
    self.positional_embedding = nn.Parameter(0.01 * torch.randn(context,
                                                                t_width))
    self.ln_final = nn.LayerNorm(t_width)
    self.text_projection = nn.Parameter(t_width ** -0.5 *
                                        torch.randn(t_width, embed_dim))
    self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

  def encode_text(self, ids):
    x = self.token_embedding(ids) + self.positional_embedding
    x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = self.ln_final(x)
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ (
        self.text_projection)


def _randomise(module):
  with torch.no_grad():
    for name, p in module.named_parameters():
      if "ln" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) +
                0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.02 * torch.randn_like(p))


def test_openai_layout_parity(tmp_path, capsys):
  torch.manual_seed(2)
  ref = _OpenAICLIP(embed_dim=32, resolution=48, v_layers=2, v_width=128,
                    patch=16, context=10, vocab=90, t_width=64, t_heads=2,
                    t_layers=2).eval()
  _randomise(ref)
  # Like OpenAI's file: a TorchScript archive with fp16 weights (the float32
  # reference holds the same fp16-rounded values).
  ref.half().float()
  torch.jit.script(copy.deepcopy(ref).half()).save(
      str(tmp_path / "ViT-tiny.pt"))
  out = str(tmp_path / "clip.msgpack")
  assert convert_clip.main(["convert_clip", "--source",
                            str(tmp_path / "ViT-tiny.pt"), "--out", out,
                            "--text_heads", "2"]) == 0
  assert "--config.model.clip.patch_size=16" in capsys.readouterr().out
  config = pretrained.load_checkpoint(out)[1]["clip"]
  assert config == dict(image_size=48, patch_size=16, vision_width=128,
                        vision_layers=2, vision_heads=2, embed_dim=32,
                        text_width=64, text_layers=2, text_heads=2,
                        context_length=10, vocab_size=90)

  rng = np.random.default_rng(1)
  images = rng.normal(size=(2, 48, 48, 3)).astype(np.float32)
  ids = _token_ids(rng, 3, 10, 90, [2, 5, 9])
  with torch.no_grad():
    ref_tokens, ref_img = ref.visual(torch.from_numpy(
        images.transpose(0, 3, 1, 2)))
    ref_txt = ref.encode_text(torch.from_numpy(ids))

  params, _ = pretrained.load_checkpoint(out)
  model = clip_model.CLIP.from_config(config)
  tokens, img = model.apply({"params": params}, images,
                            method=lambda m, x: m.visual(x))
  text = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                     method=model.encode_text)
  assert _max_diff(tokens, ref_tokens.numpy()) <= TOL
  assert _max_diff(img, ref_img.numpy()) <= TOL
  assert _max_diff(text, ref_txt.numpy()) <= TOL

  # Into a KI2HOI-like tree: the image tower alone as `clip_visual`.
  vis = clip_model.vision_from_config(config)
  target = {"clip_visual": jax.eval_shape(
      vis.init, jax.random.key(0), jnp.zeros((1, 48, 48, 3)))["params"],
            "other": {"kernel": jnp.ones((2, 2))}}
  loaded = pretrained.load_pretrained(target, out, prefix="clip_visual",
                                         source_prefix="visual")
  np.testing.assert_array_equal(loaded["other"]["kernel"], np.ones((2, 2)))
  tokens2, img2 = vis.apply({"params": loaded["clip_visual"]}, images)
  assert _max_diff(tokens2, ref_tokens.numpy()) <= TOL
  assert _max_diff(img2, ref_img.numpy()) <= TOL


def test_unconverted_entries_fail():
  sd = {k: np.zeros(s, np.float32) for k, s in _vitb32_shapes(
      vision_layers=1, text_layers=1).items()}
  config = convert_clip.infer_config(sd)
  convert_clip.openai_to_flax(sd, config)  # Complete: converts.
  sd["visual.attnpool.weight"] = np.zeros(3, np.float32)
  with pytest.raises(KeyError, match="attnpool"):
    convert_clip.openai_to_flax(sd, config)


# ------------------------------------------- (d) full-size ViT-B/32 by shapes


def _vitb32_shapes(vision_layers=12, text_layers=12):
  """Names and shapes of OpenAI's ViT-B-32.pt state dict (no extras)."""
  shapes = {
      "positional_embedding": (77, 512),
      "text_projection": (512, 512),
      "logit_scale": (),
      "visual.class_embedding": (768,),
      "visual.positional_embedding": (50, 768),
      "visual.proj": (768, 512),
      "visual.conv1.weight": (768, 3, 32, 32),
      "visual.ln_pre.weight": (768,), "visual.ln_pre.bias": (768,),
      "visual.ln_post.weight": (768,), "visual.ln_post.bias": (768,),
      "token_embedding.weight": (49408, 512),
      "ln_final.weight": (512,), "ln_final.bias": (512,),
  }
  for prefix, w, n in (("visual.", 768, vision_layers), ("", 512, text_layers)):
    for i in range(n):
      b = f"{prefix}transformer.resblocks.{i}."
      shapes.update({
          b + "attn.in_proj_weight": (3 * w, w),
          b + "attn.in_proj_bias": (3 * w,),
          b + "attn.out_proj.weight": (w, w), b + "attn.out_proj.bias": (w,),
          b + "ln_1.weight": (w,), b + "ln_1.bias": (w,),
          b + "mlp.c_fc.weight": (4 * w, w), b + "mlp.c_fc.bias": (4 * w,),
          b + "mlp.c_proj.weight": (w, 4 * w), b + "mlp.c_proj.bias": (w,),
          b + "ln_2.weight": (w,), b + "ln_2.bias": (w,),
      })
  return shapes


def test_full_size_vitb32_layout(tmp_path):
  from ki2hoi_jax.config_lib import base  # pylint: disable=g-import-not-at-top
  shapes = _vitb32_shapes()
  assert len(shapes) == 14 + 2 * 12 * 12
  rng = np.random.default_rng(0)
  sd = {k: np.asarray(rng.standard_normal(s, dtype=np.float32))
        for k, s in shapes.items()}
  # A plain torch.save'd state dict, with OpenAI's non-parameter entries.
  sd = {k: torch.from_numpy(v) for k, v in sd.items()}
  sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
            vocab_size=torch.tensor(49408))
  torch.save(sd, str(tmp_path / "ViT-B-32.pt"))
  del sd
  out = str(tmp_path / "clip.msgpack")
  config = convert_clip.convert(str(tmp_path / "ViT-B-32.pt"), out)
  clip_cfg = base.get_config().model.clip
  assert config == clip_model.clip_kwargs(clip_cfg)

  model = clip_model.CLIP.from_config(clip_cfg)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 224, 224, 3)),
                            jnp.zeros((1, 77), jnp.int32))["params"]
  expected = {k: v.shape for k, v in pretrained.flatten(abstract).items()}
  params, meta = pretrained.load_checkpoint(out)
  got = {k: v.shape for k, v in pretrained.flatten(params).items()}
  assert sorted(got) == sorted(expected)
  for k in expected:
    assert got[k] == expected[k], k
  num = sum(int(np.prod(s)) for s in got.values())
  assert num == meta["num_params"] == 151_277_313  # OpenAI ViT-B/32.
  report = pretrained.compare(pretrained.flatten(abstract),
                                 pretrained.flatten(params))
  assert report.ok and len(report.loaded) == len(expected)
  # The visual tower has the same names as the model's `clip_visual`.
  target = {"clip_visual": abstract["visual"]}
  loaded = pretrained.load_pretrained(target, out, prefix="clip_visual",
                                         source_prefix="visual")
  np.testing.assert_array_equal(
      loaded["clip_visual"]["conv1"]["kernel"],
      params["visual"]["conv1"]["kernel"])


# --------------------------------------------------- (e) real files (optional)


@pytest.mark.skipif(not os.environ.get("KI2HOI_CLIP_PT"),
                    reason="KI2HOI_CLIP_PT (OpenAI ViT-B-32.pt) not set")
@pytest.mark.slow
def test_real_openai_clip(tmp_path):
  from ki2hoi_jax.clip import text_embeddings  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.data import metadata  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "clip.msgpack")
  config = convert_clip.convert(os.environ["KI2HOI_CLIP_PT"], out)
  params, meta = pretrained.load_checkpoint(out)
  assert 150e6 < meta["num_params"] < 153e6
  prompts = metadata.hico().object_prompts()[:8]
  emb = text_embeddings.compute_text_embeddings(params, config, prompts)
  assert emb.shape == (8, config["embed_dim"])
  assert np.all(np.isfinite(emb))
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  model = clip_model.CLIP.from_config(config)
  s = config["image_size"]
  img = model.apply({"params": params}, jnp.zeros((1, s, s, 3)),
                    method=model.encode_image)
  assert np.all(np.isfinite(np.asarray(img)))



@pytest.mark.skipif(not os.environ.get("KI2HOI_DETR_PTH"),
                    reason="KI2HOI_DETR_PTH (detr-r50-e632da11.pth) not set")
@pytest.mark.slow
def test_real_detr(tmp_path):
  from ki2hoi_jax.config_lib import base  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.weights import convert_detr  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "detr.msgpack")
  meta = convert_detr.convert(os.environ["KI2HOI_DETR_PTH"], out,
                              base.get_config())
  names = meta["initialised"]
  # ResNet-50: 53 convolutions, 53 frozen BNs with 4 tensors each.
  assert sum(n.startswith("params/backbone/") for n in names) == 53
  assert sum(n.startswith("frozen_bn/backbone/") for n in names) == 53 * 4
  assert "params/input_proj/kernel" in names
  assert "params/instance_interactor/layers_2/multihead_attn/v_proj/kernel" in (
      names)
  variables, _ = pretrained.load_checkpoint(out)
  assert all(np.all(np.isfinite(v))
             for v in pretrained.flatten(variables).values())

# ------------------------------------------------------ (c) DETR-R50 layout


class _DetrDecoderLayer(nn.Module):
  """DETR TransformerDecoderLayer.forward_post (dropout 0)."""

  def __init__(self, d, heads, ff):
    super().__init__()
    self.self_attn = nn.MultiheadAttention(d, heads)
    self.multihead_attn = nn.MultiheadAttention(d, heads)
    self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
    self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d), nn.LayerNorm(d),
                                          nn.LayerNorm(d))

  def forward(self, tgt, memory, pad_mask, pos, query_pos):  # [L, B, D]
    q = k = tgt + query_pos
    tgt = self.norm1(tgt + self.self_attn(q, k, tgt)[0])
    t2 = self.multihead_attn(tgt + query_pos, memory + pos, memory,
                             key_padding_mask=pad_mask)[0]
    tgt = self.norm2(tgt + t2)
    return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


def _tiny_detr_config():
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  m = config.model
  m.backbone_depth, m.backbone_width = 50, 8
  m.backbone_norm = "frozen"  # The demo trains GroupNorm from scratch.
  m.backbone_dilation = m.anchor_queries = False  # GEN-VLKT's layout.
  m.d_model, m.num_heads, m.dim_feedforward = 32, 4, 64
  m.instance_decoder_layers, m.interaction_decoder_layers = 2, 2
  return config


def _tiny_detr_state_dict(d=32, heads=4, ff=64, width=8):
  torch.manual_seed(3)
  body = torch_resnet.ResNet50Body(width).eval()
  layers = [_DetrDecoderLayer(d, heads, ff).eval() for _ in range(6)]
  for layer in layers:
    _randomise_norms(layer)
  sd = {f"backbone.0.body.{k}": v for k, v in body.state_dict().items()}
  for i, layer in enumerate(layers):
    sd.update({f"transformer.decoder.layers.{i}.{k}": v
               for k, v in layer.state_dict().items()})
  extra = {
      "transformer.decoder.norm.weight": 1 + 0.1 * torch.randn(d),
      "transformer.decoder.norm.bias": 0.1 * torch.randn(d),
      "transformer.encoder.layers.0.linear1.weight": torch.randn(ff, d),
      "input_proj.weight": 0.05 * torch.randn(d, width * 32, 1, 1),
      "input_proj.bias": 0.1 * torch.randn(d),
      "class_embed.weight": torch.randn(92, d),
      "class_embed.bias": torch.randn(92),
      "query_embed.weight": torch.randn(100, d),
  }
  for j, (a, b) in enumerate(((d, d), (d, d), (d, 4))):
    extra[f"bbox_embed.layers.{j}.weight"] = torch.randn(b, a) / a ** 0.5
    extra[f"bbox_embed.layers.{j}.bias"] = 0.1 * torch.randn(b)
  sd.update(extra)
  return sd, body, layers


def _randomise_norms(module):
  with torch.no_grad():
    for name, p in module.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.05 * torch.randn_like(p))


def test_detr_conversion_parity_and_report(tmp_path):
  from ki2hoi_jax.weights import convert_detr  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.models import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.models import transformer as transformer_lib  # pylint: disable=g-import-not-at-top
  sd, body, layers = _tiny_detr_state_dict()
  sd["backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(0)
  torch.save({"model": sd, "epoch": 1}, str(tmp_path / "detr.pth"))
  config = _tiny_detr_config()
  out = str(tmp_path / "detr.msgpack")
  meta = convert_detr.convert(str(tmp_path / "detr.pth"), out, config)
  variables, saved_meta = pretrained.load_checkpoint(out)
  assert saved_meta["covers"] == meta["covers"]

  # Backbone C5 map.
  rng = np.random.default_rng(4)
  image = rng.normal(size=(2, 96, 64, 3)).astype(np.float32)
  with torch.no_grad():
    ref_c5 = body(torch.from_numpy(image.transpose(0, 3, 1, 2))).numpy()
  resnet = backbone_lib.ResNet(depth=50, width=8)
  c5, _ = resnet.apply({"params": variables["params"]["backbone"],
                        "frozen_bn": variables["frozen_bn"]["backbone"]},
                       image)
  assert c5.shape == (2, 3, 2, 256)
  assert _max_diff(c5, ref_c5.transpose(0, 2, 3, 1)) <= TOL
  # The same weights, dilated (DC5: stride 16).
  dc5_body = torch_resnet.ResNet50Body(8, dilation=True).eval()
  dc5_body.load_state_dict(body.state_dict())
  with torch.no_grad():
    ref_dc5 = dc5_body(torch.from_numpy(image.transpose(0, 3, 1, 2))).numpy()
  dc5, _ = backbone_lib.ResNet(depth=50, width=8, dilation=True).apply(
      {"params": variables["params"]["backbone"],
       "frozen_bn": variables["frozen_bn"]["backbone"]}, image)
  assert dc5.shape == (2, 6, 4, 256)
  assert _max_diff(dc5, ref_dc5.transpose(0, 2, 3, 1)) <= TOL

  # Decoder layer 1 (q/k/v split, positions, key padding) in both decoders.
  tgt = rng.normal(size=(2, 5, 32)).astype(np.float32)
  qpos = rng.normal(size=(1, 5, 32)).astype(np.float32)
  memory = rng.normal(size=(2, 7, 32)).astype(np.float32)
  pos = rng.normal(size=(2, 7, 32)).astype(np.float32)
  valid = np.ones((2, 7), bool)
  valid[1, 5:] = False
  t = lambda x: torch.from_numpy(x).transpose(0, 1)  # pylint: disable=unnecessary-lambda-assignment
  with torch.no_grad():
    ref = layers[1](t(tgt), t(memory), torch.from_numpy(~valid), t(pos),
                    t(np.broadcast_to(qpos, tgt.shape).copy()))
  ref = ref.transpose(0, 1).numpy()
  layer = transformer_lib.DecoderLayer(num_heads=4, dim_feedforward=64,
                                       dropout=0.0)
  got = layer.apply(
      {"params": variables["params"]["instance_interactor"]["layers_1"]},
      tgt, memory, qpos, pos, valid)
  assert _max_diff(got, ref) <= TOL
  inter = variables["params"]["interaction_decoder"]["layers_1"]
  np.testing.assert_array_equal(
      inter["self_attn"]["v_proj"]["kernel"],
      sd["transformer.decoder.layers.1.self_attn.in_proj_weight"][64:]
      .numpy().T)
  assert "linear1" not in inter  # Input width 2D in KI2HOI: skipped.
  for head in ("sub_bbox_embed", "obj_bbox_embed"):
    np.testing.assert_array_equal(
        variables["params"]["instance_interactor"][head]["layers_2"]["kernel"],
        sd["bbox_embed.layers.2.weight"].numpy().T)

  # Report and metadata.
  assert ("params/interaction_decoder/layers_0/linear1/kernel"
          in meta["skipped"])
  assert "params/instance_interactor/layers_1/self_attn/q_proj" in (
      meta["covers"])
  assert "params/backbone" in meta["covers"]
  assert not any("clip_visual" in n or "query_embed" in n
                 for n in meta["initialised"])
  report = open(out + ".report.txt").read()
  assert "params/backbone/layer4_2: 3/3 (all)" in report  # 3 convs.
  assert "frozen_bn/backbone/bn1: 4/4 (all)" in report
  assert "params/instance_interactor/query_embed_h: 0/1 (none)" in report
  # DETR fills self_attn, multihead_attn, norm1-3, linear2 (24 of 42).
  assert "params/interaction_decoder/layers_0: 24/42 (partial)" in report
  assert "1 x DETR encoder" in report

  # Strict loading into the model's variables tree.
  from ki2hoi_jax.models import ki2hoi  # pylint: disable=g-import-not-at-top
  model = ki2hoi.build_model(config)
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), *ki2hoi.dummy_inputs(config), train=False))
  abstract = pretrained.unflatten(pretrained.flatten(abstract))
  loaded, report = pretrained.load_pretrained_with_report(abstract, out)
  assert report.ok and len(report.loaded) == len(meta["initialised"])
  np.testing.assert_array_equal(
      loaded["frozen_bn"]["backbone"]["layer2_0"]["downsample_1"]
      ["running_var"],
      sd["backbone.0.body.layer2.0.downsample.1.running_var"].numpy())
  assert isinstance(loaded["params"]["verb_decoder"], dict)

  # Another model width: shapes differ, strict loading fails, partial loads.
  config.model.d_model = 64
  abstract64 = pretrained.unflatten(pretrained.flatten(jax.eval_shape(
      lambda: ki2hoi.build_model(config).init(
          jax.random.key(0), *ki2hoi.dummy_inputs(config), train=False))))
  with pytest.raises(pretrained.CheckpointMismatchError,
                     match="input_proj/kernel"):
    pretrained.load_pretrained(abstract64, out)
  _, report = pretrained.load_pretrained_with_report(abstract64, out,
                                                        allow_partial=True)
  assert any(n.startswith("params/backbone/") for n in report.loaded)
  assert ("params/input_proj/kernel", (1, 1, 256, 32), (1, 1, 256, 64)) in (
      report.mismatched)


# ------------------------------------------------------- weights.pretrained


def test_load_pretrained_strict_checks(tmp_path):
  path = str(tmp_path / "ck.msgpack")
  ckpt = {"enc": {"a": {"kernel": np.full((2, 3), 2.0, np.float32),
                        "bias": np.ones(3, np.float32)},
                  "b": {"scale": np.ones(4, np.float32)}},
          "head": {"w": np.ones(5, np.float32)}}
  pretrained.save_checkpoint(path, ckpt, {"format": "test"})
  target = {"model": {"a": {"kernel": jnp.zeros((2, 3)),
                            "bias": jnp.zeros(3)},
                      "b": {"scale": jnp.zeros(4)}},
            "other": {"x": jnp.zeros(1)}}
  loaded = pretrained.load_pretrained(target, path, prefix="model",
                                         source_prefix="enc")
  np.testing.assert_array_equal(loaded["model"]["a"]["kernel"],
                                np.full((2, 3), 2.0))
  np.testing.assert_array_equal(loaded["other"]["x"], [0.0])
  assert loaded["model"]["a"]["kernel"].dtype == jnp.float32

  target["model"]["b"]["scale"] = jnp.zeros(5)  # Shape mismatch.
  target["model"]["c"] = {"bias": jnp.zeros(2)}  # Missing in checkpoint.
  with pytest.raises(pretrained.CheckpointMismatchError) as err:
    pretrained.load_pretrained(target, path, "model", source_prefix="enc")
  assert "c/bias" in str(err.value) and "b/scale: (4,) vs (5,)" in str(
      err.value)
  # Unexpected: the whole checkpoint has 'head' that the target lacks.
  _, report = pretrained.load_pretrained_with_report(
      {"enc": target["model"]}, path, allow_partial=True)
  assert report.unexpected == ["head/w"]
  assert report.missing == ["enc/c/bias"]
  assert report.loaded == ["enc/a/bias", "enc/a/kernel"]
  with pytest.raises(FileNotFoundError, match="Pretrained weights"):
    pretrained.load_checkpoint(str(tmp_path / "absent.msgpack"))
