"""Scenes: the palette, the geometry (`SceneConfig`), drawing (`render`), exact decoding from
pixels (`scene_from_image`) and captions (`describe`, `listing`). Nothing here knows about
questions or task types.

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3}]}
    >>> scene_from_image(render(scene)) == scene
    True
"""

from __future__ import annotations

from dataclasses import dataclass

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

#: The scene kinds, each with the key of its item list: a shape grid's objects, a chart's bars.
SCENE_KINDS: dict[str, str] = {"shapes": "objects", "bars": "bars"}
#: Colour words naming what a scene kind draws besides its items: the white background, and a
#: chart's black axes and grey gridlines.
DRAWN_COLOURS: dict[str, tuple[str, ...]] = {
    "shapes": ("white",),
    "bars": ("white", "black", "gray", "grey"),
}


def scene_items(scene: dict) -> list[dict]:
    """A scene's items (objects or bars); ValueError for a scene of no known kind.

    >>> scene_items({"kind": "bars", "bars": [{"color": "red", "value": 3}]})
    [{'color': 'red', 'value': 3}]
    >>> scene_items({"kind": "pie"})
    Traceback (most recent call last):
    ...
    ValueError: unknown scene kind 'pie'; known: ['shapes', 'bars'] (scenes come from cotlib.synth)
    """
    kind = scene.get("kind")
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; known: {list(SCENE_KINDS)} "
                         "(scenes come from cotlib.synth)")
    return list(scene.get(SCENE_KINDS[kind]) or [])


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

    >>> scene = {"kind": "shapes", "objects": [{"shape": "triangle", "color": "blue",
    ...          "size": "large", "row": 1, "col": 2}]}
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


def where(o: dict, grid: int) -> str:
    """Where an object is: "in the top-left" (3x3 grid) or "at row 2, column 4"."""
    name = position_name(o["row"], o["col"], grid)
    return f"at {name}" if grid != 3 else f"in the {name}"


def the_object(o: dict, grid: int) -> str:
    """ "the small red circle in the top-left": an object and its place."""
    return f"the {o['size']} {o['color']} {o['shape']} {where(o, grid)}"


def join_and(items: list[str]) -> str:
    """ "a, b and c".

    >>> join_and(["a", "b", "c"]), join_and(["a"])
    ('a, b and c', 'a')
    """
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def count_noun(k: int, noun: str) -> str:
    """ "1 object", "3 objects"."""
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def describe(scene: dict, config: SceneConfig = DEFAULT_CONFIG) -> str:
    """Natural-language caption listing everything in the scene.

    >>> describe({"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                    {"color": "blue", "value": 5}]})
    'A bar chart with 2 bars, from left to right: a red bar of height 3; a blue bar of height 5.'
    """
    if scene["kind"] == "bars":
        parts = [f"a {b['color']} bar of height {b['value']}" for b in scene["bars"]]
        head = f"A bar chart with {count_noun(len(parts), 'bar')}, from left to right"
    else:
        g = config.grid
        parts = [
            f"a {o['size']} {o['color']} {o['shape']} {where(o, g)}" for o in scene["objects"]
        ]
        head = f"A {g}x{g} grid with {count_noun(len(parts), 'object')}"
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
