"""KI2HOI, the full detector (docs/architecture.md parts 1-6), and its factory.

Variables of an initialised model:

* `params`: trainable parameters, including the frozen CLIP image tower
  (`params['clip_visual']`, OpenAI names, see `ki2hoi_jax.clip.model`) and the
  ResNet (`params['backbone']`, torchvision names, see `backbone.py`); the
  optimizer tells them apart with `param_groups.param_labels`.
* `frozen_bn`: the ResNet's FrozenBatchNorm constants (never mutated).
* `batch_stats`: running statistics of the Ho-Pair Encoder batch norm
  (`model.encoder_norm='batch'`), mutated in training:
  `model.apply(variables, ..., train=True, mutable=['batch_stats'])`.
* `constants` (optional): `interaction_text_embeddings` [C, E], read when the
  call argument is None (see `with_text_embeddings`).

Call (docs/contracts.md "Model"):
  outputs = model.apply(variables, image, mask, clip_image,
                        interaction_text_embeddings, train=...,
                        rngs={'dropout': key})
The interaction text embeddings are computed once by the train loop with the
CLIP text tower and passed in; any C works, so the classes can be swapped at
inference. The verb extraction decoder's class queries come from the same
embeddings unless `verb_query_text_embeddings` [C_q, E] is given (evaluation
keeps the training classes' queries, `config.model.verb_queries`).
`object_text_embeddings` [K, E] only initialise the object classifier (pass
them to `init`). The CLIP crop fusion of inference
(`inference.clip_pair_fusion`) is no part of the model: it runs on the
outputs (evaluation/clip_fusion.py).

Names a DETR-R50 converter maps onto (PyTorch key -> Flax path):
  backbone.0.body.<torchvision path>  -> params/backbone/<conv>/kernel (HWIO),
                                         frozen_bn/backbone/<bn>/{weight,...}
                                         ('layer1.0.bn1' -> 'layer1_0/bn1')
  input_proj.{weight,bias}            -> params/input_proj/{kernel,bias}
  transformer.decoder.layers.{i}.*    -> params/instance_interactor/layers_{i}/
      self_attn | multihead_attn (in_proj split into q_proj/k_proj/v_proj,
      out_proj), linear1, linear2, norm1..3 (LayerNorm weight -> scale)
  transformer.decoder.norm            -> params/instance_interactor/norm
  bbox_embed.layers.{j}               -> params/instance_interactor/
                                         {sub,obj}_bbox_embed/layers_{j}
(Dense kernels are the transposed PyTorch weights.) DETR's encoder,
query_embed and class_embed have no counterpart here.

Ablation switches (paper Table IV; `config.model`, defaults = the paper
model): `encoder_type` ('ho_pair' | 'detr', DETR's transformer encoder under
the same `encoder` name), `clip_cross_attention` (V_sp in the interaction
decoder), `classifier` ('clip_text' | 'linear') and `verb_decoder` (verb
feature learning). Switching a part off removes its parameters; the outputs
keep their keys and shapes.

Frozen parts: the CLIP image tower runs under `stop_gradient` in
`frozen_dtype`; the ResNet computes in `frozen_dtype` too (its stem and the
first `backbone_frozen_stages` stages are frozen by the optimizer labels and
run under `stop_gradient`, the rest trains at the backbone learning rate,
DETR-style).
"""

from typing import Any, Dict, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from ki2hoi_jax.clip import model as clip_model
from ki2hoi_jax.data import metadata
from ki2hoi_jax.models import backbone as backbone_lib
from ki2hoi_jax.models import ho_pair_encoder
from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import interaction_decoder
from ki2hoi_jax.models import position_encoding
from ki2hoi_jax.models import roi_align
from ki2hoi_jax.models import transformer
from ki2hoi_jax.models import verb_decoder
from ki2hoi_jax.models import verb_predictor

OUTPUT_KEYS = ("pred_sub_boxes", "pred_obj_boxes", "pred_obj_logits",
               "pred_human_logits", "pred_interaction_logits")
# Keys of every decoder layer's dict (the final one and each aux output).
LAYER_KEYS = OUTPUT_KEYS + ("interaction_clip_feature",)
ENCODER_TYPES = ("ho_pair", "detr")
CONSTANTS = "constants"


def _dtype(x):
  return jnp.dtype(x) if isinstance(x, str) else x


class KI2HOI(nn.Module):
  """The KI2HOI detector.

  Attributes:
    clip_visual: the CLIP image tower (`CLIPVisionTransformer` or any module
      mapping [B, S, S, 3] to (tokens [B, T, W], embedding [B, E])); built by
      `build_model` with dtype `frozen_dtype`. Its parameters live under
      `params['clip_visual']`.
    num_object_classes: K.
    embed_dim: CLIP joint embedding size E.
    backbone_depth: ResNet depth (18 | 34 | 50 | 101).
    backbone_width: ResNet stem channels.
    backbone_mask_padding: zero padding before every backbone conv.
    backbone_norm: 'frozen' (DETR FrozenBatchNorm) | 'group' (from scratch).
    backbone_dilation: dilated last stage, stride 16 (DETR-DC5).
    backbone_frozen_stages: the ResNet stem and stages 1..n run under
      `stop_gradient` (n >= 1; the optimizer labels freeze the same ones).
    d_model: transformer width D.
    num_heads: attention heads.
    dim_feedforward: FFN width.
    dropout: dropout rate.
    num_queries: N pair queries.
    anchor_queries: anchored, spatially modulated instance queries (see
      `InstanceInteractor`).
    encoder_layers: Ho-Pair Encoder layers.
    encoder_mlp_ratio: encoder point-wise MLP width multiple.
    encoder_norm: 'batch' | 'masked'.
    roi_size: ROI-Align grid of the encoder input (None: the full C5 map).
    roi_sampling_ratio: ROI-Align samples per bin and axis; <= 0:
      adaptive, ceil(ROI extent / roi_size) per axis (torchvision's
      default, every covered C5 cell is read).
    instance_decoder_layers: instance interactor layers.
    verb_decoder_layers: verb extraction decoder layers.
    interaction_decoder_layers: interaction representation decoder layers.
    encoder_type: 'ho_pair' (Ho-Pair Encoder) | 'detr' (post-norm DETR
      transformer encoder, `transformer.TransformerEncoder`; no
      batch_stats).
    clip_cross_attention: the interaction decoder cross-attends to V_sp
      (False: no `clip_proj` and no `clip_attn`).
    classifier: 'clip_text' (cosine against the interaction text
      embeddings; object classifier initialised from the object text
      embeddings) | 'linear' (learned linear interaction head over the
      classes at initialisation, `verb_predictor.VerbPredictor`; object
      classifier randomly initialised: no CLIP text knowledge).
    verb_decoder: verb feature learning: the verb extraction decoder and the
      per-pair V_verb retrieval (False: no `verb_decoder` params, no
      `verb_attn`, no `verb_projection`).
    logit_scale_init: initial logit scale of the cosine classifiers.
    axis_name: device axis for the synced encoder batch norm (None: no sync).
    dtype: compute dtype of the trainable parts.
    frozen_dtype: compute dtype of the backbone (and of `clip_visual`, set by
      whoever builds it).
  """
  clip_visual: nn.Module
  num_object_classes: int = 80
  embed_dim: int = 512
  backbone_depth: int = 50
  backbone_width: int = 64
  backbone_mask_padding: bool = False
  backbone_norm: str = "frozen"
  backbone_dilation: bool = False
  backbone_frozen_stages: int = 0
  d_model: int = 256
  num_heads: int = 8
  dim_feedforward: int = 2048
  dropout: float = 0.1
  num_queries: int = 64
  anchor_queries: bool = False
  encoder_layers: int = 3
  encoder_mlp_ratio: int = 4
  encoder_norm: str = "batch"
  roi_size: Optional[int] = 7
  roi_sampling_ratio: int = 0
  instance_decoder_layers: int = 3
  verb_decoder_layers: int = 1
  interaction_decoder_layers: int = 3
  encoder_type: str = "ho_pair"
  clip_cross_attention: bool = True
  classifier: str = "clip_text"
  verb_decoder: bool = True
  logit_scale_init: float = 1 / 0.07
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  frozen_dtype: Any = jnp.float32

  def _interaction_text(self, text):
    if text is not None:
      return text
    if self.has_variable(CONSTANTS, "interaction_text_embeddings"):
      return self.get_variable(CONSTANTS, "interaction_text_embeddings")
    raise ValueError("Pass interaction_text_embeddings [C, E] or store them "
                     "in variables['constants'] (with_text_embeddings).")

  def encode(self, image, mask, train: bool = False):
    """Backbone + projection (+ ROI-Align) + Ho-Pair Encoder.

    Args:
      image: [B, H, W, 3] ImageNet-normalised, zero in padding.
      mask: [B, H, W] bool, True on valid pixels.
      train: batch statistics and dropout.

    Returns:
      (memory [B, M, D], position encoding [B, M, D], memory mask [B, M],
      token centres [B, M, 2] as normalised (x, y));
      M = roi_size^2 or ceil(H/s) * ceil(W/s), s the backbone stride
      (32, or 16 dilated).
    """
    dtype = _dtype(self.dtype)
    resnet = backbone_lib.ResNet(
        depth=self.backbone_depth, width=self.backbone_width,
        mask_padding=self.backbone_mask_padding, norm=self.backbone_norm,
        dilation=self.backbone_dilation,
        frozen_stages=self.backbone_frozen_stages,
        dtype=_dtype(self.frozen_dtype), name="backbone")
    feats, fmask = resnet(image, mask)
    x = nn.Conv(self.d_model, (1, 1), dtype=dtype, name="input_proj")(feats)
    if self.roi_size is not None:
      b = image.shape[0]
      # Valid image extent in pixels, then in feature units.
      vh = jnp.sum(jnp.any(mask, axis=2), axis=1).astype(jnp.float32)
      vw = jnp.sum(jnp.any(mask, axis=1), axis=1).astype(jnp.float32)
      boxes = jnp.stack([jnp.zeros_like(vw), jnp.zeros_like(vh),
                         vw / resnet.stride, vh / resnet.stride], -1)
      valid_cells = jnp.stack([jnp.sum(jnp.any(fmask, axis=2), axis=1),
                               jnp.sum(jnp.any(fmask, axis=1), axis=1)], -1)
      x = roi_align.roi_align(x, boxes[:, None], (self.roi_size,) * 2,
                              self.roi_sampling_ratio, aligned=True,
                              valid_size=valid_cells)[:, 0]
      fmask = jnp.ones((b, self.roi_size, self.roi_size), bool)
    pos = position_encoding.sine_position_encoding(fmask, self.d_model,
                                                   dtype=dtype)
    b, h, w, d = x.shape
    if self.encoder_type == "ho_pair":
      x = ho_pair_encoder.HoPairEncoder(
          self.encoder_layers, self.encoder_mlp_ratio, self.encoder_norm,
          self.axis_name, self.dropout, dtype, name="encoder")(x, fmask,
                                                               train)
      x = x.reshape(b, h * w, d)
    elif self.encoder_type == "detr":
      x = transformer.TransformerEncoder(
          self.encoder_layers, self.num_heads, self.dim_feedforward,
          self.dropout, dtype, name="encoder")(
              x.reshape(b, h * w, d), pos.reshape(b, h * w, d),
              fmask.reshape(b, h * w), train)
    else:
      raise ValueError(f"encoder_type must be one of {ENCODER_TYPES}, got "
                       f"{self.encoder_type!r}")
    points = position_encoding.cell_centres(fmask)
    return (x, pos.reshape(b, h * w, d),
            fmask.reshape(b, h * w), points.reshape(b, h * w, 2))

  def _clip_branch(self, clip_image):
    """Frozen CLIP image tower: (V_sp [B, T, D] or None, embedding [B, E]).

    V_sp, the projected patch tokens the interaction decoder cross-attends
    to, exists with `clip_cross_attention` only; the raw image embedding is
    the target of the L_re loss.
    """
    tokens, clip_embedding = self.clip_visual(
        clip_image.astype(_dtype(self.frozen_dtype)))
    tokens = jax.lax.stop_gradient(tokens)
    clip_embedding = jax.lax.stop_gradient(clip_embedding)
    clip_tokens = None
    if self.clip_cross_attention:
      dtype = _dtype(self.dtype)
      clip_tokens = nn.Dense(self.d_model, dtype=dtype, name="clip_proj")(
          tokens.astype(dtype))
    return clip_tokens, clip_embedding

  @nn.compact
  def __call__(self, image: jnp.ndarray, mask: jnp.ndarray,
               clip_image: jnp.ndarray,
               interaction_text_embeddings: Optional[jnp.ndarray] = None,
               object_text_embeddings: Optional[jnp.ndarray] = None,
               verb_query_text_embeddings: Optional[jnp.ndarray] = None,
               *, train: bool = False) -> Dict[str, Any]:
    """Detects HOIs.

    Args:
      image: [B, H, W, 3] ImageNet-normalised, zero in padding.
      mask: [B, H, W] bool, True on valid pixels.
      clip_image: [B, S, S, 3] CLIP-normalised.
      interaction_text_embeddings: [C, E] CLIP text embeddings of the
        interaction prompts (None: `variables['constants']`); with
        `classifier='linear'` only C is read (it must be the C of `init`).
      object_text_embeddings: [K, E] object-prompt embeddings: they
        initialise the object classifier (ignored with
        `classifier='linear'`).
      verb_query_text_embeddings: [C_q, E] text embeddings of the verb
        extraction decoder's class queries (None: the interaction text
        embeddings; evaluation passes the training classes', see
        `vocabulary.verb_query_prompts`).
      train: dropout and batch statistics.

    Returns:
      The dict of docs/contracts.md: pred_sub_boxes / pred_obj_boxes
      [B, N, 4] (cxcywh, sigmoid), pred_obj_logits [B, N, K+1],
      pred_human_logits [B, N, 2], pred_interaction_logits [B, N, C],
      interaction_clip_feature [B, E] (the mean over queries of the raw
      projected interaction features, GEN-VLKT's `inter_memory`, not
      normalised), aux_outputs (list of dicts with those six keys, earlier
      layers first), interaction_clip_feature_unit [B, E] (last layer: the
      mean over queries of the L2-normalised projected features) and
      clip_image_embedding [B, E] (the raw CLIP image embedding, not
      normalised). All float32.
    """
    dtype = _dtype(self.dtype)
    text = self._interaction_text(interaction_text_embeddings)
    memory, memory_pos, memory_mask, memory_points = self.encode(
        image, mask, train)
    clip_tokens, clip_embedding = self._clip_branch(clip_image)
    if self.classifier == "linear":
      object_text_embeddings = None  # Random init: no CLIP text knowledge.

    inst = instance_interactor.InstanceInteractor(
        self.num_queries, self.instance_decoder_layers, self.num_heads,
        self.dim_feedforward, self.dropout, self.num_object_classes,
        self.embed_dim, self.logit_scale_init, self.anchor_queries, dtype,
        name="instance_interactor")(memory, memory_pos, memory_mask,
                                    object_text_embeddings, train,
                                    memory_points)
    verb_feats = None
    if self.verb_decoder:
      verb_feats = verb_decoder.VerbExtractionDecoder(
          self.verb_decoder_layers, self.num_heads, self.dim_feedforward,
          self.dropout, dtype, name="verb_decoder")(
              text if verb_query_text_embeddings is None
              else verb_query_text_embeddings,
              memory, memory_pos, memory_mask, train)
    # Q_inter = ((Q_h + P) + (Q_o + P)) / 2: averaged last-layer instance
    # features as content, the pair embedding P as query position.
    tgt = (inst["human_hs"][-1] + inst["object_hs"][-1]) / 2
    inter_hs, retrieved = interaction_decoder.InteractionRepresentationDecoder(
        self.interaction_decoder_layers, self.num_heads, self.dim_feedforward,
        self.dropout, dtype, self.clip_cross_attention, self.verb_decoder,
        name="interaction_decoder")(
            tgt, inst["pair_embed"][None].astype(dtype), clip_tokens, memory,
            memory_pos, memory_mask, verb_feats, train)
    inter_logits, inter_feat = verb_predictor.VerbPredictor(
        self.embed_dim, self.logit_scale_init, dtype, self.classifier,
        name="verb_predictor")(inter_hs, retrieved, text)
    out = _layer_outputs(inst, inter_logits, inter_feat)
    out["clip_image_embedding"] = clip_embedding.astype(jnp.float32)
    return out


def _layer_outputs(inst: Dict[str, jnp.ndarray], inter_logits: jnp.ndarray,
                   inter_feat: jnp.ndarray) -> Dict[str, Any]:
  """The output dict of the decoders' per-layer results (float32).

  Instance layer i is paired with interaction layer i, aligned at the end
  when the two decoders have different depths.

  Args:
    inst: `InstanceInteractor` outputs: sub_boxes / obj_boxes [L_i, B, N, 4],
      obj_logits [L_i, B, N, K+1], human_logits [L_i, B, N, 2].
    inter_logits: [L_x, B, N, C] interaction logits.
    inter_feat: [L_x, B, N, E] projected interaction features (raw).

  Returns:
    The last paired layer's `LAYER_KEYS`, `aux_outputs` (the earlier pairs)
    and `interaction_clip_feature_unit` [B, E].
  """
  num = min(inst["sub_boxes"].shape[0], inter_logits.shape[0])
  off_i = inst["sub_boxes"].shape[0] - num
  off_x = inter_logits.shape[0] - num
  clip_feature = jnp.mean(inter_feat, axis=2)  # [L, B, E], raw

  def f32(x):
    return x.astype(jnp.float32)

  layers = [{
      "pred_sub_boxes": f32(inst["sub_boxes"][off_i + j]),
      "pred_obj_boxes": f32(inst["obj_boxes"][off_i + j]),
      "pred_obj_logits": f32(inst["obj_logits"][off_i + j]),
      "pred_human_logits": f32(inst["human_logits"][off_i + j]),
      "pred_interaction_logits": f32(inter_logits[off_x + j]),
      "interaction_clip_feature": clip_feature[off_x + j],
  } for j in range(num)]
  out = dict(layers[-1])
  out["aux_outputs"] = layers[:-1]
  out["interaction_clip_feature_unit"] = jnp.mean(
      instance_interactor.l2_normalize(inter_feat[-1]), axis=1)
  return out


# ------------------------------------------------------------------ factory


def num_object_classes_for(dataset_name: str) -> int:
  """K: 80 on HICO-DET, 81 on V-COCO (incl. its 'no_object' class)."""
  if dataset_name == "hico_det":
    return metadata.hico().num_objects
  if dataset_name == "vcoco":
    return len(metadata.vcoco().objects)
  raise ValueError(f"Unknown dataset {dataset_name!r}.")


def build_model(config, axis_name: Optional[str] = None,
                num_object_classes: Optional[int] = None) -> KI2HOI:
  """Builds KI2HOI from a full config (reads `config.model`, `dataset.name`).

  Args:
    config: the experiment ConfigDict.
    axis_name: device axis of the synced encoder batch norm ('batch' inside
      the pmapped train step; None for init and single-device use).
    num_object_classes: overrides K (default: from `config.dataset.name`).

  Returns:
    An unbound KI2HOI module.
  """
  m = config.model
  frozen_dtype = jnp.dtype(m.frozen_dtype)
  if num_object_classes is None:
    num_object_classes = num_object_classes_for(config.dataset.name)
  return KI2HOI(
      clip_visual=clip_model.vision_from_config(m.clip, frozen_dtype),
      num_object_classes=num_object_classes,
      embed_dim=int(m.clip.embed_dim),
      backbone_depth=int(m.backbone_depth),
      backbone_width=int(m.backbone_width),
      backbone_mask_padding=bool(m.backbone_mask_padding),
      backbone_norm=str(m.backbone_norm),
      backbone_dilation=bool(m.backbone_dilation),
      backbone_frozen_stages=int(m.backbone_frozen_stages),
      d_model=int(m.d_model),
      num_heads=int(m.num_heads),
      dim_feedforward=int(m.dim_feedforward),
      dropout=float(m.dropout),
      num_queries=int(m.num_queries),
      anchor_queries=bool(m.anchor_queries),
      encoder_layers=int(m.encoder_layers),
      encoder_mlp_ratio=int(m.encoder_mlp_ratio),
      encoder_norm=str(m.encoder_norm),
      roi_size=None if m.roi_size is None else int(m.roi_size),
      roi_sampling_ratio=int(m.roi_sampling_ratio),
      instance_decoder_layers=int(m.instance_decoder_layers),
      verb_decoder_layers=int(m.verb_decoder_layers),
      interaction_decoder_layers=int(m.interaction_decoder_layers),
      encoder_type=str(m.encoder_type),
      clip_cross_attention=bool(m.clip_cross_attention),
      classifier=str(m.classifier),
      verb_decoder=bool(m.verb_decoder),
      logit_scale_init=float(m.logit_scale_init),
      axis_name=axis_name,
      dtype=jnp.dtype(m.dtype),
      frozen_dtype=frozen_dtype,
  )


def dummy_inputs(config, batch_size: int = 1, image_hw=(64, 64),
                 num_interactions: int = 0):
  """Zero inputs of the right shapes for `init` / `jax.eval_shape`.

  Returns:
    (image [B,H,W,3], mask [B,H,W], clip_image [B,S,S,3],
     interaction_text_embeddings [C,E]); C defaults to the class count of
    `config.model.interaction_space` on `config.dataset.name`.
  """
  s = int(config.model.clip.image_size)
  e = int(config.model.clip.embed_dim)
  if not num_interactions:
    num_interactions = len(metadata.interaction_class_names(
        config.model.interaction_space, config.dataset.name))
  h, w = image_hw
  return (jnp.zeros((batch_size, h, w, 3), jnp.float32),
          jnp.ones((batch_size, h, w), bool),
          jnp.zeros((batch_size, s, s, 3), jnp.float32),
          jnp.zeros((num_interactions, e), jnp.float32))


def with_text_embeddings(variables, interaction_text_embeddings):
  """Returns `variables` with the interaction text embeddings as constants."""
  variables = dict(flax.core.unfreeze(variables))
  variables[CONSTANTS] = {
      "interaction_text_embeddings": jnp.asarray(interaction_text_embeddings)}
  return variables

