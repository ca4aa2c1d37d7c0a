"""Synthetic visual reasoning tasks with known answers: shape grids and bar charts.

Images are drawn without anti-aliasing from a small palette of pure colours on a grid
that lines up with ViT patches, so `scene_from_image` recovers the exact scene from
pixels alone. Questions come from `TEMPLATES`, which generation (`make_task`) and the
template parser (`solve`, used by the teacher) share, and one solver computes every
answer together with short reasoning steps.

    >>> task = make_task(0, "count_color")
    >>> scene_from_image(task.get_image()) == task.scene
    True
    >>> solve(task.prompt_question(), task.scene)[0] == task.answer
    True

Conventions (what the answers mean):
- counts are digits ("0".."7"); yes/no answers are "yes" or "no";
- compare_counts: "yes" only if the first count is strictly larger (a tie is "no");
- spatial "directly to the left of" = the adjacent cell in the same row; yes/no "above"
  = in a higher row (any column), "to the left of" = in a column further left (any row);
- bar_diff is the absolute difference (larger minus smaller), never negative;
- multiple choice: `answer` is the option TEXT, `answer_letter` its letter, and the
  prompt ends with "Answer with the option's letter.".
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = "1"  # bump whenever generated tasks or images change

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 170, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 215, 0),
    "purple": (140, 0, 200),
    "orange": (255, 130, 0),
}
BACKGROUND = (255, 255, 255)  # white
GRIDLINE = (210, 210, 210)  # faint grey unit lines in bar charts
AXIS = (0, 0, 0)  # black baseline and y axis in bar charts
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
OFFSETS = {"left": (0, -1), "right": (0, 1), "above": (-1, 0), "below": (1, 0)}
MAX_OBJECTS = 7
MAX_BAR_VALUE = 9
LETTERS = "ABCDEF"

TASK_TYPES: dict[str, str] = {
    "count_color": "shapes",
    "count_shape": "shapes",
    "count_color_shape": "shapes",
    "compare_counts": "shapes",
    "count_sum": "shapes",
    "spatial": "shapes",
    "color_of_shape": "shapes",
    "bar_max": "bars",
    "bar_min": "bars",
    "bar_diff": "bars",
    "bar_value": "bars",
}

# form -> (task_type, template). Slots: {color} {color2} {shape} {shape2} {size}
# {relation}, plus plurals {shape_pl} {shape2_pl}. Used for generation AND parsing.
TEMPLATES: dict[str, tuple[str, str]] = {
    "count_color": ("count_color", "How many {color} objects are there?"),
    "count_shape": ("count_shape", "How many {shape_pl} are there?"),
    "count_color_shape": ("count_color_shape", "How many {color} {shape_pl} are there?"),
    "compare_shapes": ("compare_counts", "Are there more {shape_pl} than {shape2_pl}?"),
    "compare_colors": (
        "compare_counts",
        "Are there more {color} objects than {color2} objects?",
    ),
    "sum_shapes": ("count_sum", "How many {shape_pl} and {shape2_pl} are there in total?"),
    "sum_colors": ("count_sum", "How many {color} and {color2} objects are there in total?"),
    "neighbour_color": (
        "spatial",
        "What color is the shape directly {relation} the {color} {shape}?",
    ),
    "neighbour_shape": ("spatial", "What shape is directly {relation} the {color} {shape}?"),
    "relation": ("spatial", "Is the {color} {shape} {relation} the {color2} {shape2}?"),
    "color_of_shape": ("color_of_shape", "What color is the {size} {shape}?"),
    "bar_max": ("bar_max", "Which color bar is the tallest?"),
    "bar_min": ("bar_min", "Which color bar is the shortest?"),
    "bar_diff": (
        "bar_diff",
        "What is the difference between the {color} bar and the {color2} bar?",
    ),
    "bar_value": ("bar_value", "What is the value of the {color} bar?"),
}
MC_INSTRUCTION = "Answer with the option's letter."


@dataclass(frozen=True)
class SceneConfig:
    """Image geometry. Shape extents are fractions of a grid cell (28 / 52 px of 64).

    >>> SceneConfig().cell, SceneConfig().extent("small"), SceneConfig().extent("large")
    (64, 28, 52)
    """

    image_size: int = 192
    grid: int = 3
    small: float = 0.4375
    large: float = 0.8125

    def __post_init__(self) -> None:
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} not divisible by grid {self.grid}")
        if self.image_size < 64:
            raise ValueError("image_size must be at least 64")
        if not 0 < self.small < self.large < 1:
            raise ValueError("need 0 < small < large < 1 (fractions of a cell)")
        if self.extent("large") - self.extent("small") < 4:
            raise ValueError("small and large shapes are too close in size to decode")

    @property
    def cell(self) -> int:
        return self.image_size // self.grid

    def extent(self, size: str) -> int:
        return round(self.cell * (self.small if size == "small" else self.large))

    # bar-chart geometry
    @property
    def margin(self) -> int:
        return self.image_size // 16

    @property
    def baseline(self) -> int:
        return self.image_size - self.margin

    @property
    def unit(self) -> int:
        return (self.baseline - self.margin) // MAX_BAR_VALUE

    @property
    def plot_x(self) -> tuple[int, int]:
        return self.margin + 2, self.image_size - self.margin


DEFAULT_CONFIG = SceneConfig()


# ---------------------------------------------------------------------------------------
# rendering and decoding


def validate_scene(scene: dict, config: SceneConfig = DEFAULT_CONFIG) -> None:
    """Raise ValueError unless `scene` is a well-formed shapes or bars scene."""
    kind = scene.get("kind")
    if kind == "shapes":
        cells = set()
        for o in scene["objects"]:
            if o["shape"] not in SHAPES or o["color"] not in PALETTE or o["size"] not in SIZES:
                raise ValueError(f"bad object {o}")
            if not (0 <= o["row"] < config.grid and 0 <= o["col"] < config.grid):
                raise ValueError(f"object outside the {config.grid}x{config.grid} grid: {o}")
            cells.add((o["row"], o["col"]))
        if len(cells) != len(scene["objects"]):
            raise ValueError("two objects share a grid cell")
    elif kind == "bars":
        colors = [b["color"] for b in scene["bars"]]
        if len(set(colors)) != len(colors) or not set(colors) <= set(PALETTE):
            raise ValueError(f"bar colours must be distinct palette colours: {colors}")
        if not all(
            isinstance(b["value"], int) and 1 <= b["value"] <= MAX_BAR_VALUE for b in scene["bars"]
        ):
            raise ValueError(f"bar values must be integers 1..{MAX_BAR_VALUE}")
        if not 1 <= len(colors) <= len(PALETTE):
            raise ValueError("a bar chart needs 1 to 6 bars")
    else:
        raise ValueError(f"unknown scene kind {kind!r}")


def _shape_box(o: dict, config: SceneConfig) -> tuple[int, int, int, int]:
    e = config.extent(o["size"])
    off = (config.cell - e) // 2
    x0, y0 = o["col"] * config.cell + off, o["row"] * config.cell + off
    return x0, y0, x0 + e - 1, y0 + e - 1


def _bar_spans(n: int, config: SceneConfig) -> list[tuple[int, int]]:
    """Left and right pixel column (inclusive) of each of n bars."""
    x0, x1 = config.plot_x
    slot = (x1 - x0) / n
    w = int(slot * 0.6)
    lefts = [x0 + int(i * slot + (slot - w) / 2) for i in range(n)]
    return [(left, left + w - 1) for left in lefts]


def render(scene: dict, config: SceneConfig = DEFAULT_CONFIG) -> Image.Image:
    """Draw a scene as an RGB image (no anti-aliasing, pure palette colours).

    >>> render({"kind": "bars", "bars": [{"color": "red", "value": 3}]}).size
    (192, 192)
    """
    validate_scene(scene, config)
    s = config.image_size
    img = Image.new("RGB", (s, s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if scene["kind"] == "shapes":
        for o in scene["objects"]:
            x0, y0, x1, y1 = _shape_box(o, config)
            fill = PALETTE[o["color"]]
            if o["shape"] == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif o["shape"] == "square":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            else:
                draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)
        return img
    m, base, unit = config.margin, config.baseline, config.unit
    px0, px1 = config.plot_x
    for k in range(1, MAX_BAR_VALUE + 1):
        draw.line((px0, base - k * unit, px1 - 1, base - k * unit), fill=GRIDLINE)
    draw.rectangle((m, m, m + 1, base + 1), fill=AXIS)  # y axis
    draw.rectangle((m, base, px1 - 1, base + 1), fill=AXIS)  # baseline
    for b, (left, right) in zip(scene["bars"], _bar_spans(len(scene["bars"]), config), strict=True):
        draw.rectangle((left, base - b["value"] * unit, right, base - 1), fill=PALETTE[b["color"]])
    return img


def _codes(arr: np.ndarray) -> np.ndarray:
    """Pack RGB pixels into one int per pixel for fast exact comparisons."""
    a = arr.astype(np.int32)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def _code(rgb: tuple[int, int, int]) -> int:
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


_CODE_TO_COLOR = {_code(rgb): name for name, rgb in PALETTE.items()}


def scene_from_image(img: Image.Image, config: SceneConfig = DEFAULT_CONFIG) -> dict:
    """Recover the exact scene from a rendered image (inverse of `render`).

    Shapes come back in row-major (row, col) order, the canonical order that generated
    scenes use. Raises ValueError if the image is not a pixel-exact course scene (a photo, a resized
    or JPEG-compressed image, a blank canvas...).

    >>> scene = make_task(3, "bar_max").scene
    >>> scene_from_image(render(scene)) == scene
    True
    """
    s = config.image_size
    if img.size != (s, s):
        raise ValueError(f"expected a {s}x{s} course image, got {img.size[0]}x{img.size[1]}")
    codes = _codes(np.asarray(img.convert("RGB")))
    if np.all(codes[config.baseline, config.margin : config.plot_x[1]] == _code(AXIS)):
        scene = _decode_bars(codes, config)
    else:
        scene = _decode_shapes(codes, config)
    diff = int(np.count_nonzero(_codes(np.asarray(render(scene, config))) != codes))
    if diff:
        raise ValueError(
            f"not a course scene: re-rendering the decoded scene differs in {diff} pixels"
        )
    return scene


def _decode_shapes(codes: np.ndarray, config: SceneConfig) -> dict:
    c, white = config.cell, _code(BACKGROUND)
    small, large = config.extent("small"), config.extent("large")
    objects = []
    for row in range(config.grid):
        for col in range(config.grid):
            block = codes[row * c : (row + 1) * c, col * c : (col + 1) * c]
            fg = block != white
            if not fg.any():
                continue
            found = np.unique(block[fg])
            if len(found) != 1 or int(found[0]) not in _CODE_TO_COLOR:
                raise ValueError(
                    f"not a course scene: cell (row {row}, col {col}) has "
                    f"{len(found)} colours, expected one palette colour"
                )
            ys, xs = np.nonzero(fg)
            w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            fill = fg.sum() / (w * h)  # square 1.0, circle ~0.79, triangle ~0.5
            shape = "square" if fill > 0.92 else "circle" if fill > 0.65 else "triangle"
            size = "small" if abs(w - small) < abs(w - large) else "large"
            color = _CODE_TO_COLOR[int(found[0])]
            objects.append({"shape": shape, "color": color, "size": size, "row": row, "col": col})
    if not objects:
        raise ValueError("not a course scene: no objects found (blank image)")
    return {"kind": "shapes", "objects": objects}


def _decode_bars(codes: np.ndarray, config: SceneConfig) -> dict:
    px0, px1 = config.plot_x
    y = config.baseline - 1
    row = [int(v) for v in codes[y, px0:px1]]
    bars, x = [], 0
    while x < len(row):
        if row[x] not in _CODE_TO_COLOR:
            x += 1
            continue
        start = x
        while x < len(row) and row[x] == row[start]:
            x += 1
        column = codes[: y + 1, px0 + (start + x - 1) // 2][::-1]
        height = int(np.argmax(column != row[start])) if (column != row[start]).any() else y + 1
        value, rest = divmod(height, config.unit)
        if rest or not 1 <= value <= MAX_BAR_VALUE:
            raise ValueError(f"not a course scene: bar height {height}px is not a whole value")
        bars.append({"color": _CODE_TO_COLOR[row[start]], "value": value})
    if not bars:
        raise ValueError("not a course scene: a chart with no bars")
    colors = [b["color"] for b in bars]
    if len(set(colors)) != len(colors):
        raise ValueError("not a course scene: repeated bar colours")
    return {"kind": "bars", "bars": bars}


# ---------------------------------------------------------------------------------------
# descriptions


def position_name(row: int, col: int, grid: int = 3) -> str:
    """Human name of a grid cell: "top-left", "centre", ... (or "row 2, column 4").

    >>> position_name(0, 0), position_name(1, 1), position_name(2, 1)
    ('top-left', 'centre', 'bottom-middle')
    """
    if grid != 3:
        return f"row {row + 1}, column {col + 1}"
    if (row, col) == (1, 1):
        return "centre"
    return f"{('top', 'middle', 'bottom')[row]}-{('left', 'middle', 'right')[col]}"


def _where(o: dict, grid: int) -> str:
    name = position_name(o["row"], o["col"], grid)
    return f"at {name}" if grid != 3 else f"in the {name}"


def _the(o: dict, grid: int) -> str:
    return f"the {o['size']} {o['color']} {o['shape']} {_where(o, grid)}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def describe(scene: dict, config: SceneConfig = DEFAULT_CONFIG) -> str:
    """Natural-language caption listing everything in the scene.

    >>> describe({"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                    {"color": "blue", "value": 5}]})
    'A bar chart with 2 bars, from left to right: a red bar of height 3; a blue bar of height 5.'
    """
    if scene["kind"] == "bars":
        parts = [f"a {b['color']} bar of height {b['value']}" for b in scene["bars"]]
        head = f"A bar chart with {_n(len(parts), 'bar')}, from left to right"
    else:
        g = config.grid
        parts = [
            f"a {o['size']} {o['color']} {o['shape']} {_where(o, g)}" for o in scene["objects"]
        ]
        head = f"A {g}x{g} grid with {_n(len(parts), 'object')}"
    return f"{head}: {'; '.join(parts)}."


def listing(scene: dict, config: SceneConfig = DEFAULT_CONFIG) -> str:
    """A compact, position-first caption: every cell of a shape grid in reading order (``empty``
    where nothing is), or every bar from left to right with its height. Each item names its place
    before its content, the order the image tokens come in.

    >>> listing({"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 5}]})
    'bars from left to right: red 3; blue 5.'
    >>> listing({"kind": "shapes", "objects": [{"shape": "circle", "color": "red",
    ...          "size": "small", "row": 0, "col": 1}]}).split("; ")[:2]
    ['top-left: empty', 'top-middle: small red circle']
    """
    if scene["kind"] == "bars":
        return "bars from left to right: " + "; ".join(
            f"{b['color']} {b['value']}" for b in scene["bars"]) + "."
    g = config.grid
    cells = {(o["row"], o["col"]): o for o in scene["objects"]}
    items = []
    for r in range(g):
        for c in range(g):
            o = cells.get((r, c))
            what = f"{o['size']} {o['color']} {o['shape']}" if o else "empty"
            items.append(f"{position_name(r, c, g)}: {what}")
    return "; ".join(items) + "."


# ---------------------------------------------------------------------------------------
# questions: templates, parsing, solving


def _slot_vocab(slot: str) -> dict[str, tuple[str, str]]:
    """Surface text -> (param key, value) for one template slot."""
    if slot.startswith("color"):
        return {c: (slot, c) for c in COLORS}
    if slot.endswith("_pl"):
        return {s + "s": (slot[:-3], s) for s in SHAPES}
    if slot.startswith("shape"):
        return {s: (slot, s) for s in SHAPES}
    if slot == "size":
        return {s: (slot, s) for s in SIZES}
    if slot == "relation":
        return {phrase: (slot, key) for key, phrase in RELATIONS.items()}
    raise KeyError(slot)


def _template_regex(template: str) -> re.Pattern:
    out = []
    for part in re.split(r"(\{\w+\})", template):
        if m := re.fullmatch(r"\{(\w+)\}", part):
            words = sorted(_slot_vocab(m.group(1)), key=len, reverse=True)
            out.append(f"(?P<{m.group(1)}>{'|'.join(map(re.escape, words))})")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out), re.IGNORECASE)


_REGEXES = {form: _template_regex(t) for form, (_, t) in TEMPLATES.items()}


def question_text(form: str, params: dict) -> str:
    """Fill the template of `form` with params.

    >>> question_text("count_color_shape", {"color": "blue", "shape": "square"})
    'How many blue squares are there?'
    """
    texts = {k: v for k, v in params.items() if k != "form"}
    for k in ("shape", "shape2"):
        if k in params:
            texts[k + "_pl"] = params[k] + "s"
    if "relation" in params:
        texts["relation"] = RELATIONS[params["relation"]]
    return TEMPLATES[form][1].format(**texts)


def format_prompt(question: str, choices: list[str] | None) -> str:
    """Question text plus options for multiple choice.

    >>> print(format_prompt("What color is the small circle?", ["red", "blue"]))
    What color is the small circle?
    Options: A. red B. blue
    Answer with the option's letter.
    """
    if not choices:
        return question
    options = " ".join(f"{letter}. {c}" for letter, c in zip(LETTERS, choices, strict=False))
    return f"{question}\nOptions: {options}\n{MC_INSTRUCTION}"


@dataclass
class ParsedQuestion:
    task_type: str
    params: dict  # includes "form"
    choices: list[str] | None = None


def _parse_options(text: str) -> list[str] | None:
    lines = text.split("\n")
    chunks = [lines[0]]
    for line in lines[1:]:
        if not re.match(r"\s*[A-Z]\.\s", line):
            break
        chunks.append(line)
    parts = re.split(r"\s([A-Z])\.\s+", " " + " ".join(chunks).strip())
    letters, texts = parts[1::2], [p.strip() for p in parts[2::2]]
    if not texts or "".join(letters) != LETTERS[: len(letters)]:
        raise ValueError(f"could not parse options from {text!r}")
    return texts


def parse_question(text: str) -> ParsedQuestion:
    """Recognise a course question (optionally with MC options) from its text.

    >>> p = parse_question("How many red objects are there?\\nOptions: A. 1 B. 2")
    >>> p.task_type, p.params, p.choices
    ('count_color', {'form': 'count_color', 'color': 'red'}, ['1', '2'])
    """
    head, sep, tail = text.partition("Options:")
    choices = _parse_options(tail) if sep else None
    found = []
    for form, regex in _REGEXES.items():
        if m := regex.search(head):
            params: dict = {"form": form}
            for slot, word in m.groupdict().items():
                key, value = _slot_vocab(slot)[word.lower()]
                params[key] = value
            found.append(params)
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one known question template in {head!r}, found {len(found)}"
        )
    return ParsedQuestion(TEMPLATES[found[0]["form"]][0], found[0], choices)


def _unique(objects: list[dict], **attrs: str) -> dict:
    hits = [o for o in objects if all(o[k] == v for k, v in attrs.items())]
    if len(hits) != 1:
        what = " ".join(attrs.values())
        raise ValueError(f"question refers to 'the {what}' but the scene has {len(hits)}")
    return hits[0]


def _listing(label: str, objs: list[dict], grid: int) -> str:
    if not objs:
        return f"{label}: none."
    return f"{label}: {_join([_the(o, grid) for o in objs])}."


def _solve(scene: dict, params: dict, config: SceneConfig) -> tuple[str, list[str]]:
    """Ground truth for one question: (answer, reasoning steps)."""
    form, p, g = params["form"], params, config.grid
    kind = TASK_TYPES[TEMPLATES[form][0]]
    if scene["kind"] != kind:
        raise ValueError(f"a {form} question needs a {kind} scene, got {scene['kind']}")
    if kind == "bars":
        return _solve_bars(scene["bars"], p)
    objs = scene["objects"]

    def select(**attrs: str) -> list[dict]:
        return [o for o in objs if all(o[k] == v for k, v in attrs.items())]

    if form in ("count_color", "count_shape", "count_color_shape"):
        attrs = {k: p[k] for k in ("color", "shape") if k in p}
        noun = f"{p['color']} object" if form == "count_color" else p["shape"]
        if form == "count_color_shape":
            noun = f"{p['color']} {p['shape']}"
        hits = select(**attrs)
        steps = [f"The image shows {_n(len(objs), 'object')}."]
        if form == "count_color_shape":
            same_color = select(color=p["color"])
            steps.append(_listing(f"{p['color'].capitalize()} objects", same_color, g))
            steps.append(_listing(f"Of these, the {p['shape']}s", hits, g))
        else:
            steps.append(_listing(f"{noun.capitalize()}s", hits, g))
        steps.append(f"That makes {_n(len(hits), noun)}.")
        return str(len(hits)), steps
    if form in ("compare_shapes", "compare_colors", "sum_shapes", "sum_colors"):
        key = "shape" if form.endswith("shapes") else "color"
        groups = []
        for k in (key, key + "2"):
            label = f"{p[k]}s" if key == "shape" else f"{p[k]} objects"
            hits = select(**{key: p[k]})
            groups.append((label, hits))
        steps = [
            _listing(lab.capitalize(), hits, g) + f" Count: {len(hits)}." for lab, hits in groups
        ]
        a, b = len(groups[0][1]), len(groups[1][1])
        if form.startswith("sum"):
            steps.append(f"In total {a} + {b} = {a + b}.")
            return str(a + b), steps
        more = a > b
        verb = "is more than" if more else "is not more than"
        steps.append(f"{a} {verb} {b}, so {'yes' if more else 'no'}.")
        return ("yes" if more else "no"), steps
    if form in ("neighbour_color", "neighbour_shape"):
        ref = _unique(objs, color=p["color"], shape=p["shape"])
        dr, dc = OFFSETS[p["relation"]]
        cell = (ref["row"] + dr, ref["col"] + dc)
        steps = [f"The {p['color']} {p['shape']} is {_where(ref, g)}."]
        nb = [o for o in objs if (o["row"], o["col"]) == cell]
        if not nb:
            raise ValueError(
                f"no object directly {RELATIONS[p['relation']]} the {p['color']} {p['shape']}"
            )
        nb_where = _where(nb[0], g)
        steps.append(f"The cell directly {RELATIONS[p['relation']]} it is {nb_where[3:]}.")
        attr = "color" if form == "neighbour_color" else "shape"
        steps.append(
            f"That cell holds a {nb[0]['size']} {nb[0]['color']} {nb[0]['shape']}, "
            f"so the {attr} is {nb[0][attr]}."
        )
        return nb[0][attr], steps
    if form == "relation":
        a = _unique(objs, color=p["color"], shape=p["shape"])
        b = _unique(objs, color=p["color2"], shape=p["shape2"])
        axis = "row" if p["relation"] in ("above", "below") else "col"
        sign = -1 if p["relation"] in ("above", "left") else 1
        yes = (a[axis] - b[axis]) * sign > 0
        word = "row" if axis == "row" else "column"
        steps = [
            f"The {p['color']} {p['shape']} is {_where(a, g)} ({word} {a[axis] + 1}).",
            f"The {p['color2']} {p['shape2']} is {_where(b, g)} ({word} {b[axis] + 1}).",
            f"So the {p['color']} {p['shape']} is {'' if yes else 'not '}"
            f"{RELATIONS[p['relation']]} the {p['color2']} {p['shape2']}: "
            f"{'yes' if yes else 'no'}.",
        ]
        return ("yes" if yes else "no"), steps
    if form == "color_of_shape":
        steps = [_listing(f"{p['shape'].capitalize()}s", select(shape=p["shape"]), g)]
        hit = _unique(objs, size=p["size"], shape=p["shape"])
        steps.append(
            f"The only {p['size']} {p['shape']} is {_where(hit, g)} and it is {hit['color']}."
        )
        return hit["color"], steps
    raise ValueError(f"unknown question form {form!r}")


def _solve_bars(bars: list[dict], p: dict) -> tuple[str, list[str]]:
    form = p["form"]
    values = {b["color"]: b["value"] for b in bars}
    listing = (
        "Bar values from left to right (counting gridlines): "
        + ", ".join(f"{b['color']} {b['value']}" for b in bars)
        + "."
    )
    if form in ("bar_max", "bar_min"):
        best = (max if form == "bar_max" else min)(values.values())
        winners = [c for c, v in values.items() if v == best]
        if len(winners) != 1:
            raise ValueError(f"no unique {'tallest' if form == 'bar_max' else 'shortest'} bar")
        word = "tallest" if form == "bar_max" else "shortest"
        return winners[0], [listing, f"The {word} is the {winners[0]} bar with {best}."]
    for k in ("color", "color2"):
        if k in p and p[k] not in values:
            raise ValueError(f"the chart has no {p[k]} bar")
    if form == "bar_value":
        v = values[p["color"]]
        return str(v), [listing, f"The {p['color']} bar reaches gridline {v}, so its value is {v}."]
    if form == "bar_diff":
        a, b = values[p["color"]], values[p["color2"]]
        hi, lo = max(a, b), min(a, b)
        return str(hi - lo), [
            f"The {p['color']} bar has value {a}.",
            f"The {p['color2']} bar has value {b}.",
            f"The difference is {hi} - {lo} = {hi - lo}.",
        ]
    raise ValueError(f"unknown question form {form!r}")


def answer_question(
    scene: dict, task_type: str, params: dict, config: SceneConfig = DEFAULT_CONFIG
) -> str:
    """Ground-truth answer for a question given by task type and params (incl. "form").

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 7}]}
    >>> answer_question(scene, "bar_diff", {"form": "bar_diff", "color": "red", "color2": "blue"})
    '4'
    """
    if TEMPLATES[params["form"]][0] != task_type:
        raise ValueError(f"form {params['form']!r} does not belong to task type {task_type!r}")
    return _solve(scene, params, config)[0]


def solve(
    question_text: str, scene: dict, config: SceneConfig = DEFAULT_CONFIG
) -> tuple[str, list[str]]:
    """Answer a question from its TEXT and a (recovered) scene: (answer, reasoning steps).

    For multiple choice the answer is the option text; the last step names the letter.

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 7}]}
    >>> answer, steps = solve("Which color bar is the tallest?\\nOptions: A. red B. blue", scene)
    >>> answer, steps[-1]
    ('blue', 'That matches option B.')
    """
    parsed = parse_question(question_text)
    answer, steps = _solve(scene, parsed.params, config)
    if parsed.choices is not None:
        if answer not in parsed.choices:
            raise ValueError(f"answer {answer!r} is not among the options {parsed.choices}")
        steps.append(f"That matches option {LETTERS[parsed.choices.index(answer)]}.")
    return answer, steps


# ---------------------------------------------------------------------------------------
# generation


def _obj(rng: random.Random, **fixed: str) -> dict:
    o = {"shape": rng.choice(SHAPES), "color": rng.choice(COLORS), "size": rng.choice(SIZES)}
    return {**o, **fixed}


def _others(rng: random.Random, k: int, avoid: Callable[[dict], bool]) -> list[dict]:
    """k random objects none of which satisfies `avoid`."""
    out: list[dict] = []
    while len(out) < k:
        if not avoid(o := _obj(rng)):
            out.append(o)
    return out


def _place(
    rng: random.Random,
    objs: list[dict],
    config: SceneConfig,
    fixed: dict[int, tuple[int, int]] | None = None,
) -> dict:
    """Put objects into distinct random cells (objs[i] goes to fixed[i] if given)."""
    fixed = fixed or {}
    g = config.grid
    free = [(r, c) for r in range(g) for c in range(g) if (r, c) not in fixed.values()]
    rng.shuffle(free)
    placed = []
    for i, o in enumerate(objs):
        r, c = fixed[i] if i in fixed else free.pop()
        placed.append({**o, "row": r, "col": c})
    placed.sort(key=lambda o: (o["row"], o["col"]))
    return {"kind": "shapes", "objects": placed}


def _max_objects(config: SceneConfig) -> int:
    return min(MAX_OBJECTS, config.grid * config.grid)


def _gen_count(rng: random.Random, task_type: str, config: SceneConfig) -> tuple[dict, dict]:
    k = rng.randint(0, 4)  # target count, uniform
    color, shape = rng.choice(COLORS), rng.choice(SHAPES)
    if task_type == "count_color":
        params, hits = {"color": color}, [_obj(rng, color=color) for _ in range(k)]
    elif task_type == "count_shape":
        params, hits = {"shape": shape}, [_obj(rng, shape=shape) for _ in range(k)]
    else:
        params = {"color": color, "shape": shape}
        hits = [_obj(rng, color=color, shape=shape) for _ in range(k)]
    n = rng.randint(max(2, k + 1), _max_objects(config))
    distract = []
    if task_type == "count_color_shape":  # near misses force checking both attributes
        distract = [
            _obj(rng, color=color, shape=rng.choice([s for s in SHAPES if s != shape])),
            _obj(rng, shape=shape, color=rng.choice([c for c in COLORS if c != color])),
        ]
        distract = distract[: n - k]
    rest = _others(
        rng, n - k - len(distract), lambda o: all(o[key] == v for key, v in params.items())
    )
    return _place(rng, hits + distract + rest, config), params


def _gen_pair(rng: random.Random, task_type: str, config: SceneConfig) -> tuple[dict, dict]:
    """compare_counts and count_sum: two groups (shapes or colours) with chosen counts."""
    by_shape = rng.random() < 0.5
    key, vocab = ("shape", SHAPES) if by_shape else ("color", COLORS)
    a, b = rng.sample(vocab, 2)
    if task_type == "count_sum":
        total = rng.randint(1, 6)
        ca = rng.randint(0, total)
        cb = total - ca
        form = "sum_shapes" if by_shape else "sum_colors"
    else:
        form = "compare_shapes" if by_shape else "compare_colors"
        if rng.random() < 0.5:  # yes: strictly more
            cb = rng.randint(0, 3)
            ca = rng.randint(cb + 1, 4)
        elif rng.random() < 0.5:  # no by a tie
            ca = cb = rng.randint(1, 3)
        else:  # no: fewer
            ca = rng.randint(0, 3)
            cb = rng.randint(ca + 1, 4)
    extra = rng.randint(max(0, 2 - ca - cb), _max_objects(config) - ca - cb)
    objs = [_obj(rng, **{key: a}) for _ in range(ca)] + [_obj(rng, **{key: b}) for _ in range(cb)]
    objs += _others(rng, extra, lambda o: o[key] in (a, b))
    return _place(rng, objs, config), {"form": form, key: a, key + "2": b}


def _gen_spatial(rng: random.Random, config: SceneConfig) -> tuple[dict, dict]:
    g = config.grid
    form = rng.choice(["neighbour_color", "neighbour_shape", "relation"])
    rel = rng.choice(list(RELATIONS))
    n = rng.randint(2, _max_objects(config))
    cells = [(r, c) for r in range(g) for c in range(g)]
    ref = _obj(rng)
    if form == "relation":
        other = _others(rng, 1, lambda o: (o["color"], o["shape"]) == (ref["color"], ref["shape"]))
        yes = rng.random() < 0.5
        axis = 0 if rel in ("above", "below") else 1
        sign = -1 if rel in ("above", "left") else 1
        pairs = [
            (p, q)
            for p in cells
            for q in cells
            if p != q and ((p[axis] - q[axis]) * sign > 0) == yes
        ]
        combos = {(ref["color"], ref["shape"]), (other[0]["color"], other[0]["shape"])}
        params = {
            "relation": rel,
            "color": ref["color"],
            "shape": ref["shape"],
            "color2": other[0]["color"],
            "shape2": other[0]["shape"],
        }
    else:
        dr, dc = OFFSETS[rel]
        pairs = [
            (p, (p[0] + dr, p[1] + dc)) for p in cells if 0 <= p[0] + dr < g and 0 <= p[1] + dc < g
        ]
        other = _others(rng, 1, lambda o: (o["color"], o["shape"]) == (ref["color"], ref["shape"]))
        combos = {(ref["color"], ref["shape"])}
        params = {"relation": rel, "color": ref["color"], "shape": ref["shape"]}
    p_cell, q_cell = rng.choice(pairs)
    rest = _others(rng, n - 2, lambda o: (o["color"], o["shape"]) in combos)
    scene = _place(rng, [ref, other[0], *rest], config, fixed={0: p_cell, 1: q_cell})
    return scene, {"form": form, **params}


def _gen_color_of_shape(rng: random.Random, config: SceneConfig) -> tuple[dict, dict]:
    size, shape = rng.choice(SIZES), rng.choice(SHAPES)
    target = _obj(rng, size=size, shape=shape)
    n = rng.randint(2, _max_objects(config))
    other_size = SIZES[1 - SIZES.index(size)]
    near = [
        _obj(rng, size=other_size, shape=shape),
        _obj(rng, size=size, shape=rng.choice([s for s in SHAPES if s != shape])),
    ]
    rng.shuffle(near)
    near = near[: n - 1]
    rest = _others(rng, n - 1 - len(near), lambda o: (o["size"], o["shape"]) == (size, shape))
    return _place(rng, [target, *near, *rest], config), {"size": size, "shape": shape}


def _gen_bars(rng: random.Random, task_type: str) -> tuple[dict, dict]:
    n = rng.randint(3, 5)
    colors = rng.sample(COLORS, n)
    values = [rng.randint(1, MAX_BAR_VALUE) for _ in range(n)]
    params: dict = {}
    if task_type in ("bar_max", "bar_min"):
        pick = max if task_type == "bar_max" else min
        while values.count(pick(values)) != 1:
            values = [rng.randint(1, MAX_BAR_VALUE) for _ in range(n)]
    elif task_type == "bar_diff":
        d = rng.randint(1, MAX_BAR_VALUE - 1)
        lo = rng.randint(1, MAX_BAR_VALUE - d)
        i, j = rng.sample(range(n), 2)
        values[i], values[j] = lo + d, lo
        if rng.random() < 0.5:
            i, j = j, i
        params = {"color": colors[i], "color2": colors[j]}
    else:
        params = {"color": rng.choice(colors)}
    bars = [{"color": c, "value": v} for c, v in zip(colors, values, strict=True)]
    return {"kind": "bars", "bars": bars}, {"form": task_type, **params}


def _generate(rng: random.Random, task_type: str, config: SceneConfig) -> tuple[dict, dict]:
    if task_type in ("count_color", "count_shape", "count_color_shape"):
        scene, params = _gen_count(rng, task_type, config)
        return scene, {"form": task_type, **params}
    if task_type in ("compare_counts", "count_sum"):
        return _gen_pair(rng, task_type, config)
    if task_type == "spatial":
        return _gen_spatial(rng, config)
    if task_type == "color_of_shape":
        scene, params = _gen_color_of_shape(rng, config)
        return scene, {"form": task_type, **params}
    if task_type in TASK_TYPES:
        return _gen_bars(rng, task_type)
    raise ValueError(f"unknown task type {task_type!r}; known: {sorted(TASK_TYPES)}")


_NUMBER_RANGES = {"bar_value": (1, MAX_BAR_VALUE), "bar_diff": (0, MAX_BAR_VALUE - 1)}


def _make_choices(rng: random.Random, task_type: str, answer: str, scene: dict) -> list[str]:
    """Answer plus plausible distractors in random order (yes/no stays in that order)."""
    if answer in ("yes", "no"):
        return ["yes", "no"]
    if answer in SHAPES:
        choices = list(SHAPES)
    elif answer in PALETTE:
        items = scene.get("bars") or scene.get("objects")
        present = list(dict.fromkeys(o["color"] for o in items if o["color"] != answer))
        absent = [c for c in COLORS if c != answer and c not in present]
        rng.shuffle(present)
        rng.shuffle(absent)
        choices = [answer, *(present + absent)[:3]]
    else:
        lo, hi = _NUMBER_RANGES.get(task_type, (0, MAX_OBJECTS))
        a = int(answer)
        near = [str(x) for x in range(lo, hi + 1) if x != a and abs(x - a) <= 3]
        choices = [answer, *rng.sample(near, 3)]
    rng.shuffle(choices)
    return choices


@dataclass
class Task:
    """One question about one scene, with its known answer.

    >>> t = make_task(7, "bar_value", multiple_choice=True)
    >>> t.answer in t.choices and t.choices[LETTERS.index(t.answer_letter)] == t.answer
    True
    """

    id: str
    task_type: str
    question: str
    answer: str
    scene: dict
    seed: int
    params: dict = field(default_factory=dict)
    choices: list[str] | None = None
    answer_letter: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    image_path: str | None = field(default=None, repr=False, compare=False)

    def get_image(self, config: SceneConfig = DEFAULT_CONFIG) -> Image.Image:
        """The image: cached, else loaded from `image_path`, else rendered from the scene."""
        if self.image is None:
            if self.image_path is not None and Path(self.image_path).exists():
                with Image.open(self.image_path) as im:
                    self.image = im.convert("RGB")
            else:
                self.image = render(self.scene, config)
        return self.image

    def prompt_question(self) -> str:
        """Question shown to the model; for MC followed by options and the instruction."""
        return format_prompt(self.question, self.choices)

    def to_record(self, image_path: str | None = None) -> dict:
        """JSON-safe dict (no pixels); image_path is stored as given (e.g. relative)."""
        return {
            "id": self.id,
            "task_type": self.task_type,
            "question": self.question,
            "answer": self.answer,
            "choices": self.choices,
            "answer_letter": self.answer_letter,
            "prompt": self.prompt_question(),
            "params": self.params,
            "scene": self.scene,
            "seed": self.seed,
            "image": image_path,
        }

    @classmethod
    def from_record(cls, rec: dict, image_root: str | Path | None = None) -> Task:
        """Inverse of `to_record`; the image loads lazily from image_root / rec["image"]."""
        path = rec.get("image")
        if path is not None and image_root is not None:
            path = str(Path(image_root) / path)
        return cls(
            id=rec["id"],
            task_type=rec["task_type"],
            question=rec["question"],
            answer=rec["answer"],
            scene=rec["scene"],
            seed=rec["seed"],
            params=rec.get("params", {}),
            choices=rec.get("choices"),
            answer_letter=rec.get("answer_letter"),
            image_path=path,
        )


def make_task(
    seed: int,
    task_type: str | None = None,
    multiple_choice: bool | None = None,
    config: SceneConfig = DEFAULT_CONFIG,
) -> Task:
    """Deterministic task from a seed (type and MC drawn from the seed when None).

    The scene and question depend only on (seed, task_type), so the MC variant of a task
    shows the same scene and asks the same question as its free-form variant.

    >>> make_task(1, "bar_diff") == make_task(1, "bar_diff")
    True
    """
    rng = random.Random(seed)
    task_type = task_type or rng.choice(list(TASK_TYPES))
    mc = rng.random() < 0.3 if multiple_choice is None else multiple_choice
    scene, params = _generate(random.Random(f"{seed}:{task_type}"), task_type, config)
    answer = answer_question(scene, task_type, params, config)
    choices = letter = None
    if mc:
        choices = _make_choices(random.Random(f"{seed}:{task_type}:mc"), task_type, answer, scene)
        letter = LETTERS[choices.index(answer)]
    return Task(
        id=f"{task_type}-{seed}" + ("-mc" if mc else ""),
        task_type=task_type,
        question=question_text(params["form"], params),
        answer=answer,
        scene=scene,
        seed=seed,
        params=params,
        choices=choices,
        answer_letter=letter,
    )


def make_tasks(
    n: int,
    seed: int = 0,
    task_types: list[str] | None = None,
    mc_fraction: float = 0.3,
    config: SceneConfig = DEFAULT_CONFIG,
) -> list[Task]:
    """n tasks cycling through task types (balanced); task i uses seed * 1_000_000 + i.

    Exactly round(n * mc_fraction) tasks, chosen by `seed`, are multiple choice.

    >>> [t.task_type for t in make_tasks(3, task_types=["bar_max", "spatial"])]
    ['bar_max', 'spatial', 'bar_max']
    """
    types = list(task_types or TASK_TYPES)
    n_mc = round(n * mc_fraction)
    mc = [i < n_mc for i in range(n)]
    random.Random(f"mc:{seed}").shuffle(mc)
    return [make_task(seed * 1_000_000 + i, types[i % len(types)], mc[i], config) for i in range(n)]


def save_split(tasks: list[Task], folder: str | Path) -> None:
    """Write folder/images/<id>.png and folder/tasks.jsonl (one record per line)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for t in tasks:
        rel = f"images/{t.id}.png"
        t.get_image().save(folder / rel, optimize=True)
        lines.append(json.dumps(t.to_record(rel)))
    (folder / "tasks.jsonl").write_text("\n".join(lines) + "\n")


def load_split(folder: str | Path) -> list[Task]:
    """Read a folder written by `save_split` (images load lazily)."""
    folder = Path(folder)
    with open(folder / "tasks.jsonl") as f:
        return [Task.from_record(json.loads(line), folder) for line in f if line.strip()]
