"""Task types about bar charts: the tallest and shortest bar, a bar's value, the difference of two
bars, and (opt-in) the total of two bars. Each type is one
:func:`~cotlib.synth.registry.register` call below (generator, templates, solver, plans).

    >>> from cotlib.synth import make_task, solve
    >>> task = make_task(4, "bar_sum", multiple_choice=False)
    >>> task.question
    'What is the total value of the orange bar and the purple bar?'
    >>> solve(task.question, task.scene)
    ('5', ['The orange bar has value 2.', 'The purple bar has value 3.', 'In total 2 + 3 = 5.'])
"""

from __future__ import annotations

import random

from cotlib.synth.registry import TaskType, register
from cotlib.synth.scenes import COLORS, MAX_BAR_VALUE, SceneConfig

# ---------------------------------------------------------------------------------------
# generation

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



def _gen_two_bars(rng: random.Random, config: SceneConfig) -> tuple[dict, dict]:
    """A chart of 3 to 5 bars and two different bars of it to add (bar_sum)."""
    n = rng.randint(3, 5)
    colors = rng.sample(COLORS, n)
    values = [rng.randint(1, MAX_BAR_VALUE) for _ in range(n)]
    i, j = rng.sample(range(n), 2)
    bars = [{"color": c, "value": v} for c, v in zip(colors, values, strict=True)]
    return {"kind": "bars", "bars": bars}, {"form": "bar_sum", "color": colors[i],
                                            "color2": colors[j]}


# ---------------------------------------------------------------------------------------
# solving (each returns the answer and its reasoning steps)


def _values(scene: dict, p: dict) -> dict[str, int]:
    """Colour -> value of every bar; ValueError if the question names a bar the chart lacks."""
    values = {b["color"]: b["value"] for b in scene["bars"]}
    for k in ("color", "color2"):
        if k in p and p[k] not in values:
            raise ValueError(f"the chart has no {p[k]} bar")
    return values


def _bar_listing(bars: list[dict]) -> str:
    return (
        "Bar values from left to right (counting gridlines): "
        + ", ".join(f"{b['color']} {b['value']}" for b in bars)
        + "."
    )


def _solve_extreme(scene: dict, p: dict, config: SceneConfig) -> tuple[str, list[str]]:
    """bar_max and bar_min: list every bar, pick the unique tallest or shortest."""
    form, bars = p["form"], scene["bars"]
    values = {b["color"]: b["value"] for b in bars}
    best = (max if form == "bar_max" else min)(values.values())
    winners = [c for c, v in values.items() if v == best]
    if len(winners) != 1:
        raise ValueError(f"no unique {'tallest' if form == 'bar_max' else 'shortest'} bar")
    word = "tallest" if form == "bar_max" else "shortest"
    return winners[0], [_bar_listing(bars), f"The {word} is the {winners[0]} bar with {best}."]


def _solve_value(scene: dict, p: dict, config: SceneConfig) -> tuple[str, list[str]]:
    v = _values(scene, p)[p["color"]]
    return str(v), [_bar_listing(scene["bars"]),
                    f"The {p['color']} bar reaches gridline {v}, so its value is {v}."]


def _solve_diff(scene: dict, p: dict, config: SceneConfig) -> tuple[str, list[str]]:
    values = _values(scene, p)
    a, b = values[p["color"]], values[p["color2"]]
    hi, lo = max(a, b), min(a, b)
    return str(hi - lo), [
        f"The {p['color']} bar has value {a}.",
        f"The {p['color2']} bar has value {b}.",
        f"The difference is {hi} - {lo} = {hi - lo}.",
    ]


def _solve_sum(scene: dict, p: dict, config: SceneConfig) -> tuple[str, list[str]]:
    """bar_sum: read the two bars, then add their values."""
    values = _values(scene, p)
    a, b = values[p["color"]], values[p["color2"]]
    return str(a + b), [
        f"The {p['color']} bar has value {a}.",
        f"The {p['color2']} bar has value {b}.",
        f"In total {a} + {b} = {a + b}.",
    ]


# ---------------------------------------------------------------------------------------
# the types

#: The local teacher's wordings for charts (see :data:`cotlib.synth.shapes.COUNT_PLANS` on why
#: they keep to the course's words).
BAR_PLANS = (
    "I will read the height of every bar from the gridlines, then answer.",
    "The image is a bar chart, so I will read the value of every bar from the gridlines.",
    "To answer, I will read the bars on the gridlines and compare their values.",
)

register(TaskType(
    name="bar_max", scene="bars",
    templates={"bar_max": "Which color bar is the tallest?"},
    generate=lambda rng, config: _gen_bars(rng, "bar_max"), solve=_solve_extreme,
    plans=BAR_PLANS,
))
register(TaskType(
    name="bar_min", scene="bars",
    templates={"bar_min": "Which color bar is the shortest?"},
    generate=lambda rng, config: _gen_bars(rng, "bar_min"), solve=_solve_extreme,
    plans=BAR_PLANS,
))
register(TaskType(
    name="bar_diff", scene="bars",
    templates={"bar_diff": "What is the difference between the {color} bar and the {color2} bar?"},
    generate=lambda rng, config: _gen_bars(rng, "bar_diff"), solve=_solve_diff,
    plans=BAR_PLANS, number_range=(0, MAX_BAR_VALUE - 1),
))
register(TaskType(
    name="bar_value", scene="bars",
    templates={"bar_value": "What is the value of the {color} bar?"},
    generate=lambda rng, config: _gen_bars(rng, "bar_value"), solve=_solve_value,
    plans=BAR_PLANS, number_range=(1, MAX_BAR_VALUE),
))
# Opt-in (not in the default mix): made by make_task(seed, "bar_sum") or
# make_tasks(n, task_types=["bar_sum"]); its question uses only words of BASE_WORDS.
register(TaskType(
    name="bar_sum", scene="bars",
    templates={"bar_sum": "What is the total value of the {color} bar and the {color2} bar?"},
    generate=_gen_two_bars, solve=_solve_sum,
    plans=(
        "I will read the values of the two bars from the gridlines and add them.",
        "The question asks for a total, so I will read the two bars and add their values.",
        "To answer, I will read the value of each of the two bars, then add the two values.",
    ),
    number_range=(2, 2 * MAX_BAR_VALUE), default=False,
))
