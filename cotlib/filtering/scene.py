"""Scene consistency for synthetic tasks: does a CAPTION mention colours, shapes, counts or bar
values the task's scene does not have?"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from cotlib import synth

# --- scene consistency (synthetic tasks) -------------------------------------

#: Colour words that can never be in a course scene (besides the palette).
FOREIGN_COLOURS = ("pink", "brown", "cyan", "teal", "navy", "maroon", "turquoise", "beige",
                   "magenta", "indigo", "silver", "black", "gray", "grey")
#: Other names for palette colours a teacher may use.
COLOUR_SYNONYMS = {"violet": "purple", "gold": "yellow", "golden": "yellow", "lime": "green"}
#: Shape words that can never be in a course scene.
FOREIGN_SHAPES = ("star", "hexagon", "pentagon", "octagon", "diamond", "heart", "cross",
                  "cylinder", "cone", "arrow", "rhombus", "trapezoid")
SHAPE_SYNONYMS = {"oval": "circle", "ellipse": "circle", "disc": "circle", "disk": "circle",
                  "sphere": "circle", "rectangle": "square", "cube": "square",
                  "pyramid": "triangle"}
_NUM = r"(\d+|" + "|".join(["one", "two", "three", "four", "five", "six", "seven", "eight",
                            "nine", "ten"]) + r")"
_NUM_WORDS = {w: i + 1 for i, w in enumerate(
    ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}


def _words_re(words: Iterable[str]) -> re.Pattern:
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return re.compile(rf"\b({alternatives})(?:e?s)?\b", re.IGNORECASE)


_COLOUR_RE = _words_re([*synth.COLORS, *COLOUR_SYNONYMS, *FOREIGN_COLOURS])
_SHAPE_RE = _words_re([*synth.SHAPES, *SHAPE_SYNONYMS, *FOREIGN_SHAPES])
_COUNT_RE = re.compile(
    rf"\b{_NUM}\s+(?:(small|large)\s+)?(?:({'|'.join(synth.COLORS)})\s+)?"
    rf"(objects|shapes|items|bars|{'|'.join(s + 's' for s in synth.SHAPES)})\b",
    re.IGNORECASE,
)
_VALUE_RE = re.compile(  # "<colour> bar ... height/value N", with no other bar in between
    rf"\b({'|'.join(synth.COLORS)})\s+bar\b(?:(?!\bbars?\b)[^.;:])*?"
    rf"\b(?:height|value|length)\s+(?:of\s+)?{_NUM}\b",
    re.IGNORECASE,
)


def _canonical_colour(word: str) -> str:
    w = word.lower()
    return COLOUR_SYNONYMS.get(w, w)


def _canonical_shape(word: str) -> str:
    w = word.lower()
    return SHAPE_SYNONYMS.get(w, w)


def scene_problem(caption: str, scene: Mapping, allowed_text: str = "") -> tuple[str, str] | None:
    """Does ``caption`` mention things the scene does not have? ``(reason, explanation)`` or None.

    - ``scene:unknown_colour`` / ``scene:unknown_shape``: a colour or shape that is not in the
      scene, unless ``allowed_text`` (the question and its options) mentions it too — a caption
      may rightly say "there are no purple objects" when asked about purple;
    - ``scene:count_mismatch``: "N [size] [colour] <objects|shapes|bars|circles…>" with N larger
      than the scene has (a smaller N may describe a part: "2 red circles in the top row");
    - ``scene:wrong_value``: "the <colour> bar … height/value N" with the wrong N (charts).

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 5}]}
    >>> scene_problem("A red bar of height 3.", scene) is None
    True
    >>> scene_problem("A pink bar of height 3.", scene)
    ('scene:unknown_colour', "mentions 'pink', which the scene does not have")
    >>> scene_problem("The red bar has a value of 5.", scene)[0]
    'scene:wrong_value'
    >>> scene_problem("The red bar is shorter than the blue bar, which has a value of 5.", scene)
    """
    items = synth.scene_items(scene)  # raises for a scene of no known kind
    allowed = allowed_text.lower()
    colours = {o["color"] for o in items} | set(synth.DRAWN_COLOURS[scene["kind"]])
    for m in _COLOUR_RE.finditer(caption):
        word = m.group(1).lower()
        if _canonical_colour(word) not in colours and not re.search(rf"\b{word}", allowed):
            return "scene:unknown_colour", f"mentions {word!r}, which the scene does not have"
    if scene.get("kind") == "shapes":
        shapes = {o["shape"] for o in items}
        for m in _SHAPE_RE.finditer(caption):
            word = m.group(1).lower()
            if _canonical_shape(word) not in shapes and not re.search(rf"\b{word}", allowed):
                return "scene:unknown_shape", f"mentions {word!r}, which the scene does not have"
    for m in _COUNT_RE.finditer(caption):
        n_text, size, colour, noun = (g.lower() if g else g for g in m.groups())
        n = int(n_text) if n_text.isdigit() else _NUM_WORDS[n_text]
        shape = noun[:-1] if noun[:-1] in synth.SHAPES else None
        if noun == "bars" and scene.get("kind") != "bars":
            continue
        matching = [o for o in items
                    if (size is None or o.get("size") == size)
                    and (colour is None or o["color"] == colour)
                    and (shape is None or o.get("shape") == shape)]
        if n > len(matching):
            return "scene:count_mismatch", (f"says {m.group(0)!r} but the scene has "
                                            f"{len(matching)}")
    if scene.get("kind") == "bars":
        values = {b["color"]: b["value"] for b in items}
        for m in _VALUE_RE.finditer(caption):
            colour, n_text = m.group(1).lower(), m.group(2).lower()
            n = int(n_text) if n_text.isdigit() else _NUM_WORDS[n_text]
            if colour in values and values[colour] != n:
                return "scene:wrong_value", (f"says the {colour} bar is {n}, the chart shows "
                                             f"{values[colour]}")
    return None
