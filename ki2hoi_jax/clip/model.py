r"""CLIP (ViT image tower + causal text transformer) in Flax linen.

A re-implementation of OpenAI's CLIP `model.py` (openai/CLIP @ dcba3cb,
`VisionTransformer`, `Transformer`, `ResidualAttentionBlock`, `CLIP.encode_text`)
with parameter names that follow OpenAI's PyTorch state-dict keys, so that the
converter (`ki2hoi_jax.weights.convert_clip`) is a list of renames and transposes:

  PyTorch key                               Flax path
  visual.conv1.weight [W,3,p,p]             visual/conv1/kernel [p,p,3,W]
  visual.class_embedding [W]                visual/class_embedding
  visual.positional_embedding [1+N,W]       visual/positional_embedding
  visual.ln_pre.{weight,bias}               visual/ln_pre/{scale,bias}
  *.transformer.resblocks.{i}.attn.in_proj_weight [3W,W]
                                            */transformer/resblocks_{i}/attn/in_proj/kernel [W,3W]
  *.resblocks.{i}.attn.out_proj.weight      */resblocks_{i}/attn/out_proj/kernel (transposed)
  *.resblocks.{i}.ln_1 / ln_2               */resblocks_{i}/ln_1 / ln_2
  *.resblocks.{i}.mlp.c_fc / mlp.c_proj     */resblocks_{i}/mlp/c_fc / mlp/c_proj
  visual.ln_post, visual.proj [W,E]         visual/ln_post, visual/proj
  token_embedding.weight [V,W]              token_embedding/embedding
  positional_embedding, ln_final,           same names at the top level
  text_projection [W,E], logit_scale []

The query/key/value projections stay fused (`in_proj`, as OpenAI stores them):
one matmul, and the OpenAI checkpoint maps by a transpose alone.

LayerNorm epsilon is PyTorch's 1e-5 and the MLP activation is QuickGELU
(x * sigmoid(1.702 x)). Parameters are float32; `dtype` is the compute dtype
(LayerNorm statistics and the attention softmax stay in float32).
"""

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

LN_EPS = 1e-5  # PyTorch's nn.LayerNorm default, used by OpenAI CLIP.


def quick_gelu(x: jnp.ndarray) -> jnp.ndarray:
  """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, use_fast_variance=False,
                      name=name)


def as_dtype(dtype: Any) -> Dtype:
  """Accepts a dtype or a config string ('float32', 'bfloat16')."""
  if isinstance(dtype, str):
    return jnp.dtype(dtype)
  return dtype


class MultiheadAttention(nn.Module):
  """Self-attention with a fused q/k/v projection (torch nn.MultiheadAttention).

  Attributes:
    width: model width W.
    heads: number of heads (W must be divisible by it).
    causal: mask future positions (text tower).
    proj_std: init std of the output projection.
    dtype: compute dtype.
  """
  width: int
  heads: int
  causal: bool = False
  proj_std: Optional[float] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[B, L, W] -> [B, L, W]."""
    if self.width % self.heads:
      raise ValueError(
          f"width {self.width} not divisible by heads {self.heads}")
    b, length, _ = x.shape
    head_dim = self.width // self.heads
    std = self.width ** -0.5
    qkv = nn.Dense(3 * self.width, dtype=self.dtype,
                   kernel_init=nn.initializers.normal(std), name="in_proj")(x)
    qkv = qkv.reshape(b, length, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    # Explicit attention: float32 logits and softmax whatever the dtype.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(head_dim)
    if self.causal:
      mask = jnp.tril(jnp.ones((length, length), bool))
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length,
                                                             self.width)
    proj_std = self.proj_std if self.proj_std is not None else std
    return nn.Dense(self.width, dtype=self.dtype,
                    kernel_init=nn.initializers.normal(proj_std),
                    name="out_proj")(out)


class MLP(nn.Module):
  """c_fc -> QuickGELU -> c_proj (OpenAI's `mlp`).

  Attributes:
    width: model width W (hidden is 4W).
    proj_std: init std of c_proj.
    dtype: compute dtype.
  """
  width: int
  proj_std: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[..., W] -> [..., W]."""
    x = nn.Dense(4 * self.width, dtype=self.dtype,
                 kernel_init=nn.initializers.normal((2 * self.width) ** -0.5),
                 name="c_fc")(x)
    x = quick_gelu(x)
    return nn.Dense(self.width, dtype=self.dtype,
                    kernel_init=nn.initializers.normal(self.proj_std),
                    name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
  """Pre-LN transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)).

  Attributes:
    width: model width W.
    heads: attention heads.
    layers: depth of the whole transformer (sets the init std).
    causal: causal self-attention (text tower).
    dtype: compute dtype.
  """
  width: int
  heads: int
  layers: int
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[B, L, W] -> [B, L, W]."""
    proj_std = self.width ** -0.5 * (2 * self.layers) ** -0.5
    y = _layer_norm("ln_1", self.dtype)(x)
    x = x + MultiheadAttention(self.width, self.heads, self.causal, proj_std,
                               self.dtype, name="attn")(y)
    y = _layer_norm("ln_2", self.dtype)(x)
    return x + MLP(self.width, proj_std, self.dtype, name="mlp")(y)


class Transformer(nn.Module):
  """A stack of `resblocks_{i}`.

  Attributes:
    width: model width W.
    layers: number of blocks.
    heads: attention heads.
    causal: causal self-attention (text tower).
    dtype: compute dtype.
  """
  width: int
  layers: int
  heads: int
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[B, L, W] -> [B, L, W]."""
    for i in range(self.layers):
      x = ResidualAttentionBlock(self.width, self.heads, self.layers,
                                 self.causal, self.dtype,
                                 name=f"resblocks_{i}")(x)
    return x


class CLIPVisionTransformer(nn.Module):
  """CLIP ViT image tower (OpenAI `VisionTransformer`).

  Attributes:
    image_size: input resolution S (square); sets the positional embedding.
    patch_size: patch size p (S must be divisible by it).
    width: ViT width W.
    layers: ViT depth.
    heads: attention heads.
    output_dim: joint embedding size E.
    dtype: compute dtype (parameters stay float32).
  """
  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  output_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Encodes CLIP-normalised images.

    Args:
      images: [B, S, S, 3] float, CLIP-normalised (mean/std of OpenAI's
        preprocessing), S = image_size.

    Returns:
      tokens: [B, 1 + N, W] all tokens after ln_post (CLS first, then the
        N = (S/p)^2 patches in row-major order).
      image_embedding: [B, E] = ln_post(CLS) @ proj (not normalised).
    """
    dtype = as_dtype(self.dtype)
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} not divisible by "
                       f"patch_size {self.patch_size}")
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"CLIP image tower built for {self.image_size}px, got "
                       f"images {images.shape}")
    grid = self.image_size // self.patch_size
    scale = self.width ** -0.5
    x = nn.Conv(self.width, (self.patch_size, self.patch_size),
                strides=(self.patch_size, self.patch_size), padding="VALID",
                use_bias=False, dtype=dtype, name="conv1")(images.astype(dtype))
    x = x.reshape(x.shape[0], grid * grid, self.width)
    class_embedding = self.param("class_embedding",
                                 nn.initializers.normal(scale), (self.width,))
    positional_embedding = self.param("positional_embedding",
                                      nn.initializers.normal(scale),
                                      (grid * grid + 1, self.width))
    cls = jnp.broadcast_to(class_embedding.astype(dtype),
                           (x.shape[0], 1, self.width))
    x = jnp.concatenate([cls, x], axis=1) + positional_embedding.astype(dtype)
    x = _layer_norm("ln_pre", dtype)(x)
    x = Transformer(self.width, self.layers, self.heads, dtype=dtype,
                    name="transformer")(x)
    tokens = _layer_norm("ln_post", dtype)(x)
    proj = self.param("proj", nn.initializers.normal(scale),
                      (self.width, self.output_dim))
    image_embedding = tokens[:, 0] @ proj.astype(dtype)
    return tokens, image_embedding


def _text_forward(token_ids: jnp.ndarray, token_embedding: nn.Embed,
                  positional_embedding: jnp.ndarray, transformer: Transformer,
                  ln_final: nn.LayerNorm, text_projection: jnp.ndarray,
                  dtype: Dtype) -> jnp.ndarray:
  """OpenAI `CLIP.encode_text` on already-bound submodules.

  Args:
    token_ids: [T, L] int32, L <= context_length, SOT ... EOT then zeros.
    token_embedding: nn.Embed [vocab, W].
    positional_embedding: [context_length, W].
    transformer: the causal text Transformer.
    ln_final: final LayerNorm.
    text_projection: [W, E].
    dtype: compute dtype.

  Returns:
    [T, E] text embeddings (not normalised), taken at the EOT token (the
    largest token id of each row).
  """
  length = token_ids.shape[1]
  if length > positional_embedding.shape[0]:
    raise ValueError(f"token_ids length {length} exceeds the context length "
                     f"{positional_embedding.shape[0]}")
  x = token_embedding(token_ids).astype(dtype)
  # Causal attention: positions after EOT never influence EOT, so a shorter
  # L than context_length gives identical embeddings.
  x = x + positional_embedding[:length].astype(dtype)
  x = transformer(x)
  x = ln_final(x)
  eot = jnp.argmax(token_ids, axis=-1)
  x = x[jnp.arange(x.shape[0]), eot]
  return x @ text_projection.astype(dtype)


def _text_params(module: nn.Module, context_length: int, vocab_size: int,
                 width: int, layers: int, heads: int, output_dim: int,
                 dtype: Dtype):
  """Declares the text-tower submodules on `module` (called from setup)."""
  module.token_embedding = nn.Embed(vocab_size, width,
                                    embedding_init=nn.initializers.normal(0.02),
                                    dtype=dtype)
  module.positional_embedding = module.param(
      "positional_embedding", nn.initializers.normal(0.01),
      (context_length, width))
  module.transformer = Transformer(width, layers, heads, causal=True,
                                   dtype=dtype)
  module.ln_final = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype,
                                 use_fast_variance=False)
  module.text_projection = module.param(
      "text_projection", nn.initializers.normal(width ** -0.5),
      (width, output_dim))


class CLIPTextTransformer(nn.Module):
  """CLIP text tower alone; its parameter tree is CLIP's text subtree.

  Parameters: token_embedding, positional_embedding, transformer, ln_final,
  text_projection (the same top-level names as in `CLIP`, so
  `{k: clip_params[k] for k in TEXT_KEYS}` applies directly).

  Attributes:
    context_length: token positions.
    vocab_size: BPE vocabulary size.
    width: text transformer width W.
    layers: depth.
    heads: attention heads.
    output_dim: joint embedding size E.
    dtype: compute dtype.
  """
  context_length: int
  vocab_size: int
  width: int
  layers: int
  heads: int
  output_dim: int
  dtype: Dtype = jnp.float32

  def setup(self):
    _text_params(self, self.context_length, self.vocab_size, self.width,
                 self.layers, self.heads, self.output_dim,
                 as_dtype(self.dtype))

  def __call__(self, token_ids: jnp.ndarray) -> jnp.ndarray:
    """[T, L] int32 token ids -> [T, E] text embeddings (not normalised)."""
    return _text_forward(token_ids, self.token_embedding,
                         self.positional_embedding, self.transformer,
                         self.ln_final, self.text_projection,
                         as_dtype(self.dtype))


TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer",
             "ln_final", "text_projection")


class CLIP(nn.Module):
  """OpenAI CLIP with a ViT image tower.

  Submodules/parameters: `visual` (CLIPVisionTransformer), `token_embedding`,
  `positional_embedding`, `transformer` (resblocks_{i}), `ln_final`,
  `text_projection`, `logit_scale`.

  Attributes:
    image_size: image resolution S.
    patch_size: ViT patch size.
    vision_width: ViT width.
    vision_layers: ViT depth.
    vision_heads: ViT heads.
    embed_dim: joint embedding size E.
    text_width: text width.
    text_layers: text depth.
    text_heads: text heads.
    context_length: token positions.
    vocab_size: BPE vocabulary size.
    dtype: compute dtype (parameters stay float32).
  """
  image_size: int = 224
  patch_size: int = 32
  vision_width: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  embed_dim: int = 512
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  context_length: int = 77
  vocab_size: int = 49408
  dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, cfg, dtype: Any = None) -> "CLIP":
    """Builds CLIP from `config.model.clip` (a ConfigDict or dict)."""
    return cls(**clip_kwargs(cfg), dtype=as_dtype(dtype or jnp.float32))

  def setup(self):
    dtype = as_dtype(self.dtype)
    self.visual = CLIPVisionTransformer(
        self.image_size, self.patch_size, self.vision_width,
        self.vision_layers, self.vision_heads, self.embed_dim, dtype)
    _text_params(self, self.context_length, self.vocab_size, self.text_width,
                 self.text_layers, self.text_heads, self.embed_dim, dtype)
    self.logit_scale = self.param("logit_scale",
                                  nn.initializers.constant(math.log(1 / 0.07)),
                                  ())

  def encode_image(self, images: jnp.ndarray) -> jnp.ndarray:
    """[B, S, S, 3] CLIP-normalised -> [B, E] (not normalised)."""
    return self.visual(images)[1]

  def encode_text(self, token_ids: jnp.ndarray) -> jnp.ndarray:
    """[T, L] int32 -> [T, E] (not normalised)."""
    return _text_forward(token_ids, self.token_embedding,
                         self.positional_embedding, self.transformer,
                         self.ln_final, self.text_projection,
                         as_dtype(self.dtype))

  def __call__(self, images: jnp.ndarray,
               token_ids: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Image-text logits as OpenAI's CLIP.forward.

    Args:
      images: [B, S, S, 3] CLIP-normalised.
      token_ids: [T, L] int32.

    Returns:
      logits_per_image [B, T] and logits_per_text [T, B].
    """
    img = self.encode_image(images).astype(jnp.float32)
    txt = self.encode_text(token_ids).astype(jnp.float32)
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    logits = jnp.exp(self.logit_scale) * img @ txt.T
    return logits, logits.T


_CONFIG_FIELDS = ("image_size", "patch_size", "vision_width", "vision_layers",
                  "vision_heads", "embed_dim", "text_width", "text_layers",
                  "text_heads", "context_length", "vocab_size")


def clip_kwargs(cfg) -> dict:
  """The CLIP architecture fields of `config.model.clip` as a plain dict."""
  return {k: int(cfg[k]) for k in _CONFIG_FIELDS}


def clip_from_config(cfg, dtype: Any = jnp.float32) -> CLIP:
  """Factory: `CLIP` from `config.model.clip`."""
  return CLIP.from_config(cfg, dtype)


def vision_from_config(cfg, dtype: Any = jnp.float32,
                       name: Optional[str] = None) -> CLIPVisionTransformer:
  """The image tower alone from `config.model.clip` (e.g. `clip_visual`)."""
  return CLIPVisionTransformer(
      int(cfg["image_size"]), int(cfg["patch_size"]), int(cfg["vision_width"]),
      int(cfg["vision_layers"]), int(cfg["vision_heads"]),
      int(cfg["embed_dim"]), as_dtype(dtype), name=name)


def text_from_config(cfg, dtype: Any = jnp.float32) -> CLIPTextTransformer:
  """The text tower alone from `config.model.clip`."""
  return CLIPTextTransformer(
      int(cfg["context_length"]), int(cfg["vocab_size"]),
      int(cfg["text_width"]), int(cfg["text_layers"]), int(cfg["text_heads"]),
      int(cfg["embed_dim"]), as_dtype(dtype))
