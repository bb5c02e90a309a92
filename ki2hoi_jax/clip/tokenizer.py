r"""CLIP's byte-level BPE tokenizer without downloads.

The merges list `bpe_simple_vocab_16e6.txt.gz` (OpenAI, MIT licence, see
LICENSE_CLIP_BPE.txt) ships as package data. From it this module builds the
vocabulary exactly as OpenAI's `clip/simple_tokenizer.py` does (openai/CLIP @
dcba3cb): the 256 byte characters of `bytes_to_unicode`, the same with `</w>`,
one token per merge (the first 48894 merges) and `<|startoftext|>`,
`<|endoftext|>` — 49408 ids — and hands vocabulary and merges to a transformers
`CLIPTokenizer` (Rust `tokenizers` backend). A user's transformers CLIP folder
(`config.init.tokenizer_dir`, with vocab.json/merges.txt or tokenizer.json)
can be used instead.

  ids = tokenize(["a photo of a cat"], context_length=77)  # int32 [1, 77]

Rows are `<|startoftext|> tokens... <|endoftext|>` then zeros; texts that are
too long are truncated and their last id replaced by `<|endoftext|>` (OpenAI's
`clip.tokenize(..., truncate=True)`).
"""

import functools
import gzip
import html
import importlib.resources
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # Merges OpenAI uses; vocab = 2*256 + merges + 2.


@functools.lru_cache()
def bytes_to_unicode() -> Dict[int, str]:
  """GPT-2's reversible byte -> printable unicode character table."""
  printable = (list(range(ord("!"), ord("~") + 1)) +
               list(range(ord("¡"), ord("¬") + 1)) +
               list(range(ord("®"), ord("ÿ") + 1)))
  codes = printable[:]
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      codes.append(256 + extra)
      extra += 1
  return dict(zip(printable, [chr(c) for c in codes]))


@functools.lru_cache()
def packaged_vocab() -> Tuple[Dict[str, int], Tuple[Tuple[str, str], ...]]:
  """Vocabulary {token: id} and merges from the packaged BPE file."""
  data = (importlib.resources.files("ki2hoi_jax.clip") /
          BPE_FILE).read_bytes()
  lines = gzip.decompress(data).decode("utf-8").split("\n")
  # Line 0 is a version header; OpenAI keeps the next NUM_MERGES lines.
  merges = tuple(tuple(line.split()) for line in lines[1:NUM_MERGES + 1])
  chars = list(bytes_to_unicode().values())
  tokens = chars + [c + "</w>" for c in chars]
  tokens += ["".join(m) for m in merges]
  tokens += [SOT, EOT]
  return {t: i for i, t in enumerate(tokens)}, merges


def _clean(text: str) -> str:
  """OpenAI's basic_clean + whitespace_clean (ftfy when installed)."""
  try:
    import ftfy  # pylint: disable=g-import-not-at-top
    text = ftfy.fix_text(text)
  except ImportError:
    pass
  text = html.unescape(html.unescape(text))
  return re.sub(r"\s+", " ", text).strip()


class Tokenizer:
  """CLIP BPE tokenizer producing fixed-length int32 id arrays.

  Attributes:
    hf_tokenizer: the underlying transformers `CLIPTokenizer`.
    sot_token_id: id of `<|startoftext|>` (49406 for OpenAI's vocabulary).
    eot_token_id: id of `<|endoftext|>` (49407); the largest id, which the
      text tower's EOT pooling relies on.
    vocab_size: number of ids.
  """

  def __init__(self, tokenizer_dir: str = ""):
    """Builds from the packaged BPE vocab or a transformers CLIP folder.

    Args:
      tokenizer_dir: '' for the packaged vocabulary, else a local folder
        readable by `CLIPTokenizer.from_pretrained` (no download).
    """
    from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
    if tokenizer_dir:
      self.hf_tokenizer = CLIPTokenizer.from_pretrained(
          tokenizer_dir, local_files_only=True)
    else:
      vocab, merges = packaged_vocab()
      self.hf_tokenizer = CLIPTokenizer(vocab=dict(vocab),
                                        merges=[tuple(m) for m in merges])
    self.sot_token_id = self.hf_tokenizer.convert_tokens_to_ids(SOT)
    self.eot_token_id = self.hf_tokenizer.convert_tokens_to_ids(EOT)
    self.vocab_size = len(self.hf_tokenizer)
    if self.eot_token_id != self.vocab_size - 1:
      raise ValueError(f"{EOT} must be the last id for EOT pooling, got "
                       f"{self.eot_token_id} of {self.vocab_size}")

  def encode(self, text: str) -> List[int]:
    """BPE ids of one text, without SOT/EOT."""
    return list(self.hf_tokenizer(_clean(text), add_special_tokens=False)
                ["input_ids"])

  def __call__(self, texts: Sequence[str], context_length: int = 77
               ) -> np.ndarray:
    """Tokenizes texts into [T, context_length] int32 (zero padded)."""
    if isinstance(texts, str):
      texts = [texts]
    if context_length < 2:
      raise ValueError(f"context_length must be >= 2, got {context_length}")
    out = np.zeros((len(texts), context_length), np.int32)
    for i, text in enumerate(texts):
      ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
      if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = self.eot_token_id
      out[i, :len(ids)] = ids
    return out


@functools.lru_cache(maxsize=4)
def get_tokenizer(tokenizer_dir: str = "") -> Tokenizer:
  """A cached `Tokenizer` ('' = packaged vocabulary)."""
  return Tokenizer(tokenizer_dir)


def tokenize(texts: Sequence[str], context_length: int = 77,
             tokenizer_dir: str = "") -> np.ndarray:
  """Tokenizes texts into int32 [T, context_length] (SOT ... EOT, zeros)."""
  return get_tokenizer(tokenizer_dir)(texts, context_length)
