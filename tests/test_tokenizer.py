"""CLIP tokenizer: identical ids to OpenAI's `clip.simple_tokenizer`."""

import importlib.resources
import importlib.util
import os

import numpy as np
import pytest

from ki2hoi_jax.clip import tokenizer
from ki2hoi_jax.data import metadata


def _reference_tokenizer():
  """OpenAI's SimpleTokenizer from clip-anytorch==2.6.0 (installed --no-deps).

  Loaded from its file: `import clip` runs clip/clip.py, which needs
  pkg_resources and torchvision; simple_tokenizer.py needs only ftfy/regex.
  """
  spec = importlib.util.find_spec("clip")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("clip-anytorch not installed "
                "(pip install --no-deps clip-anytorch==2.6.0)")
  path = os.path.join(list(spec.submodule_search_locations)[0],
                      "simple_tokenizer.py")
  module_spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer",
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.SimpleTokenizer()


def _reference_tokenize(ref, texts, context_length):
  """clip.tokenize(texts, context_length, truncate=True) without torch."""
  sot, eot = ref.encoder["<|startoftext|>"], ref.encoder["<|endoftext|>"]
  out = np.zeros((len(texts), context_length), np.int32)
  for i, text in enumerate(texts):
    ids = [sot] + ref.encode(text) + [eot]
    if len(ids) > context_length:
      ids = ids[:context_length]
      ids[-1] = eot
    out[i, :len(ids)] = ids
  return out


@pytest.fixture(scope="module")
def tok():
  return tokenizer.get_tokenizer()


def test_packaged_vocab_found_as_package_data():
  resource = importlib.resources.files("ki2hoi_jax.clip") / tokenizer.BPE_FILE
  assert resource.is_file()
  assert (importlib.resources.files("ki2hoi_jax.clip") /
          "LICENSE_CLIP_BPE.txt").is_file()
  vocab, merges = tokenizer.packaged_vocab()
  assert len(merges) == 48894 and len(vocab) == 49408
  assert merges[0] == ("i", "n")  # First merge of OpenAI's list.
  assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["in"] == 512
  assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_special_ids_and_layout(tok):
  assert (tok.sot_token_id, tok.eot_token_id, tok.vocab_size) == (
      49406, 49407, 49408)
  ids = tokenizer.tokenize(["a photo of a", ""], context_length=8)
  assert ids.dtype == np.int32 and ids.shape == (2, 8)
  np.testing.assert_array_equal(
      ids, [[49406, 320, 1125, 539, 320, 49407, 0, 0],
            [49406, 49407, 0, 0, 0, 0, 0, 0]])
  # Case, surrounding and repeated whitespace do not matter (OpenAI cleaning).
  np.testing.assert_array_equal(
      tokenizer.tokenize(["  A   PHOTO\tof a "], 8), ids[:1])


def test_truncation_keeps_eot(tok):
  text = "a photo of a person riding a bicycle on a sunny day"
  full = tok(text, context_length=77)[0]
  n = int(np.sum(full > 0))
  assert n > 6
  short = tok([text], context_length=6)[0]
  np.testing.assert_array_equal(short[:5], full[:5])
  assert short[-1] == tok.eot_token_id and short.argmax() == 5


def test_matches_openai_simple_tokenizer_on_prompts(tok):
  ref = _reference_tokenizer()
  hico = metadata.hico()
  texts = hico.hoi_prompts() + hico.object_prompts()
  assert len(texts) == 680
  extra = ["Hello,  World! it's 12 cafés &amp; naïve", "日本語 😀 don't",
           "x" * 200]
  for text in texts + extra:
    assert tok.encode(text) == ref.encode(text), text
  for length in (77, 8):
    np.testing.assert_array_equal(tok(texts + extra, length),
                                  _reference_tokenize(ref, texts + extra,
                                                      length))


def test_transformers_folder(tmp_path, tok):
  tok.hf_tokenizer.save_pretrained(str(tmp_path))
  texts = metadata.hico().object_prompts()[:10]
  np.testing.assert_array_equal(
      tokenizer.tokenize(texts, 16, tokenizer_dir=str(tmp_path)),
      tokenizer.tokenize(texts, 16))
