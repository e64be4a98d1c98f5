"""Planners turn a prompt into a valid :class:`~wordpaint.text.plan.ScenePlan`.

All backends share one interface, ``planner.plan(prompt, seed=0) -> ScenePlan``, and every plan
passes through :func:`~wordpaint.text.plan.repair`, so a plan is valid whatever the backend wrote.
``rules`` is a deterministic parser of the shapes-world vocabulary: the fast fallback and the
baseline the LLM planners are measured against.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from wordpaint.data.captions import NUMBER_WORDS, PLURALS, RELATION_WORDS
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
_BACKGROUND = re.compile(r"\b(?:on|against|over)\s+(?:a|an|the)?\s*(white|black|gray|grey)(?:\s+background)?\b")
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
        background = "gray" if m.group(1) == "grey" else m.group(1)
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
            warnings.append(f"asked for {m.count} {PLURALS[m.shape]}; the canvas holds at most {MAX_OBJECTS} objects")
            m.count = MAX_OBJECTS
        mentions = [m for m in mentions if m.count > 0]
        if not mentions:
            warnings.append(f"no object the model can draw was found; shapes: {', '.join(SHAPES)}")
        plan = ScenePlan(_rewrite(mentions, relations, background) if mentions else prompt[:200], layout(mentions, relations),
                         background, "flat", warnings)
        return repair(plan)


PLANNERS = {"rules": RulesPlanner}


class CachedPlanner:
    """Memoises ``plan`` by (backend, model, prompt, seed): LLM planners cost ~1 s a prompt."""

    def __init__(self, planner, *, size: int = 10_000):
        self.planner, self.size = planner, size
        self.name, self.model = planner.name, getattr(planner, "model", "")
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


def get_planner(name: str) -> CachedPlanner:
    """The planner backend registered as ``name``, with a plan cache."""
    check_choice("planner", name, PLANNERS)
    return CachedPlanner(PLANNERS[name]())
