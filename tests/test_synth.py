"""Tests for cotlib.synth and scripts/make_data.py (synthetic tasks with known answers)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow plain `pytest` without installing the package
    sys.path.insert(0, str(ROOT))

from cotlib.synth import (  # noqa: E402
    COLORS,
    LETTERS,
    PALETTE,
    REGISTRY,
    TASK_TYPES,
    TEMPLATES,
    SceneConfig,
    Task,
    answer_question,
    describe,
    load_split,
    make_task,
    make_tasks,
    parse_question,
    render,
    save_split,
    scene_from_image,
    solve,
)

DATA = ROOT / "data" / "tasks"
SPLIT_SIZES = {"train": 240, "val": 60, "test": 120, "heldout": 330}
TYPES = list(REGISTRY)  # every registered type, the opt-in ones (bar_sum) too


def png_roundtrip(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_make_task_is_deterministic():
    for seed in range(30):
        for task_type in (None, TYPES[seed % len(TYPES)]):
            a, b = make_task(seed, task_type), make_task(seed, task_type)
            assert a == b
            assert a.get_image().tobytes() == b.get_image().tobytes()
    assert make_tasks(25, seed=4) == make_tasks(25, seed=4)
    assert make_tasks(25, seed=4) != make_tasks(25, seed=5)


def test_mc_variant_has_same_scene_and_question():
    for seed in range(40):
        t = TYPES[seed % len(TYPES)]
        free, mc = make_task(seed, t, False), make_task(seed, t, True)
        assert (free.scene, free.question, free.answer) == (mc.scene, mc.question, mc.answer)
        assert free.choices is None and free.prompt_question() == free.question
        assert mc.answer in mc.choices and len(set(mc.choices)) == len(mc.choices)
        assert mc.choices[LETTERS.index(mc.answer_letter)] == mc.answer
        assert mc.prompt_question().endswith("Answer with the option's letter.")


def test_scene_from_image_exact_inverse_300_seeds():
    kinds = Counter()
    for seed in range(300):
        task = make_task(seed, TYPES[seed % len(TYPES)])
        kinds[task.scene["kind"]] += 1
        img = render(task.scene)
        assert img.mode == "RGB" and img.size == (192, 192)
        assert scene_from_image(img) == task.scene
        assert scene_from_image(png_roundtrip(img)) == task.scene
    assert kinds["shapes"] > 100 and kinds["bars"] > 80


def test_render_uses_only_palette_and_chart_colours():
    allowed = {(255, 255, 255), (210, 210, 210), (0, 0, 0), *PALETTE.values()}
    for seed in range(22):
        img = make_task(seed, TYPES[seed % len(TYPES)]).get_image()
        assert {c for _, c in img.getcolors(1000)} <= allowed


@pytest.mark.parametrize(
    "config", [SceneConfig(image_size=128, grid=4), SceneConfig(image_size=256, grid=4)]
)
def test_scene_roundtrip_other_configs(config):
    for seed in range(40):
        task = make_task(seed, TYPES[seed % len(TYPES)], config=config)
        assert scene_from_image(render(task.scene, config), config) == task.scene


def test_solve_matches_answer_for_every_type_and_variant():
    for task_type in TYPES:
        for seed in range(40):
            for mc in (False, True):
                task = make_task(seed, task_type, mc)
                answer, steps = solve(task.prompt_question(), task.scene)
                assert answer == task.answer, (task, steps)
                assert steps and all(isinstance(s, str) and s for s in steps)
                assert answer_question(task.scene, task_type, task.params) == task.answer
                parsed = parse_question(task.prompt_question())
                assert parsed.task_type == task_type and parsed.params == task.params
                assert parsed.choices == task.choices


def test_teacher_path_pixels_to_answer():
    """What the teacher does: recover the scene from PNG bytes, then solve the prompt text."""
    for task in make_tasks(66, seed=9, mc_fraction=0.5):
        scene = scene_from_image(png_roundtrip(task.get_image()))
        assert solve(task.prompt_question(), scene)[0] == task.answer


def test_every_task_type_produced_and_balanced():
    tasks = make_tasks(110, seed=3)
    counts = Counter(t.task_type for t in tasks)
    assert set(counts) == set(TASK_TYPES) and set(counts.values()) == {10}
    assert sum(t.choices is not None for t in tasks) == 33  # mc_fraction 0.3
    for t in tasks:
        assert TASK_TYPES[t.task_type] == t.scene["kind"]
        assert t.question == t.question.strip() and t.question.endswith("?")
    forms = {t.params["form"] for t in make_tasks(330, seed=1)}
    assert forms == {form for form, (name, _) in TEMPLATES.items() if name in TASK_TYPES}
    assert "bar_sum" not in counts  # opt-in: made only when asked for by name


def test_answer_balance():
    for task_type in TYPES:
        answers = Counter(make_task(seed, task_type, False).answer for seed in range(500))
        top, n = answers.most_common(1)[0]
        assert n / 500 <= 0.6, (task_type, answers)
        if task_type in ("count_color", "count_shape", "count_color_shape"):
            assert set("01234") <= set(answers)
        if task_type == "compare_counts":
            assert 0.4 <= answers["yes"] / 500 <= 0.6
        if task_type in ("color_of_shape", "bar_max", "bar_min"):
            assert set(answers) == set(COLORS)
    letters = Counter(make_task(s, "bar_value", True).answer_letter for s in range(400))
    assert set(letters) == set("ABCD") and max(letters.values()) / 400 < 0.35


def test_scene_rules_hold():
    for seed in range(300):
        scene = make_task(seed, TYPES[seed % len(TYPES)]).scene
        if scene["kind"] == "shapes":
            cells = [(o["row"], o["col"]) for o in scene["objects"]]
            assert 2 <= len(cells) <= 7 and len(set(cells)) == len(cells)
        else:
            bars = scene["bars"]
            assert 3 <= len(bars) <= 5 and len({b["color"] for b in bars}) == len(bars)
            assert all(1 <= b["value"] <= 9 for b in bars)


def test_known_answers_by_hand():
    scene = {  # objects in canonical row-major order, as scene_from_image returns them
        "kind": "shapes",
        "objects": [
            {"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0},
            {"shape": "square", "color": "green", "size": "small", "row": 0, "col": 1},
            {"shape": "circle", "color": "blue", "size": "small", "row": 1, "col": 1},
            {"shape": "triangle", "color": "blue", "size": "small", "row": 2, "col": 2},
        ],
    }
    cases = {
        "How many blue objects are there?": "2",
        "How many circles are there?": "2",
        "How many blue circles are there?": "1",
        "Are there more circles than squares?": "yes",
        "Are there more squares than triangles?": "no",  # tie -> no
        "How many circles and squares are there in total?": "3",
        "What color is the shape directly to the left of the green square?": "red",
        "What shape is directly below the green square?": "circle",
        "Is the red circle above the blue triangle?": "yes",
        "Is the blue triangle to the left of the red circle?": "no",
        "What color is the large circle?": "red",
    }
    for question, expected in cases.items():
        assert solve(question, scene)[0] == expected, question
    assert scene_from_image(render(scene)) == scene
    caption = describe(scene)
    assert "a large red circle in the top-left" in caption and "centre" in caption
    bars = {"kind": "bars", "bars": [{"color": "red", "value": 3}, {"color": "blue", "value": 7}]}
    assert solve("What is the difference between the blue bar and the red bar?", bars)[0] == "4"
    assert solve("Which color bar is the shortest?", bars)[0] == "red"
    answer, steps = solve("What is the value of the blue bar?\nOptions: A. 6 B. 7", bars)
    assert answer == "7" and steps[-1] == "That matches option B."


def test_bad_questions_raise():
    scene = make_task(0, "count_color").scene
    with pytest.raises(ValueError):
        parse_question("What is the meaning of life?")
    with pytest.raises(ValueError):
        solve("Which color bar is the tallest?", scene)  # wrong scene kind
    with pytest.raises(ValueError):
        solve("How many red objects are there?\nOptions: A. 98 B. 99", scene)


def test_non_scene_images_raise():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8))
    ramp = np.linspace(0, 255, 192, dtype=np.uint8)
    gradient = Image.fromarray(np.stack([np.tile(ramp, (192, 1))] * 3, axis=-1))
    blank = Image.new("RGB", (192, 192), "white")
    tampered = make_task(1, "count_shape").get_image().copy()
    tampered.putpixel((3, 3), (255, 0, 0))
    jpeg = io.BytesIO()
    make_task(2, "bar_max").get_image().save(jpeg, format="JPEG")
    for img in (noise, gradient, blank, tampered, Image.open(jpeg), blank.resize((100, 100))):
        with pytest.raises(ValueError, match="course"):
            scene_from_image(img)


def test_records_and_split_roundtrip(tmp_path):
    tasks = make_tasks(22, seed=7)
    for t in tasks:
        rec = json.loads(json.dumps(t.to_record("x.png")))
        back = Task.from_record(rec)
        assert back == t and back.prompt_question() == t.prompt_question()
    save_split(tasks, tmp_path)
    loaded = load_split(tmp_path)
    assert loaded == tasks
    for a, b in zip(loaded, tasks, strict=True):
        assert a.image_path and Path(a.image_path).exists()
        assert a.get_image().tobytes() == b.get_image().tobytes()


def test_shipped_split_sizes_and_answers():
    ids = set()
    for name, size in SPLIT_SIZES.items():
        tasks = load_split(DATA / name)
        assert len(tasks) == size
        counts = Counter(t.task_type for t in tasks).values()
        assert max(counts) - min(counts) <= 1
        for t in tasks:
            scene = scene_from_image(t.get_image())
            assert scene == t.scene
            assert solve(t.prompt_question(), scene)[0] == t.answer
        ids |= {(t.question, json.dumps(t.scene, sort_keys=True)) for t in tasks}
    assert len(ids) == sum(SPLIT_SIZES.values())  # no duplicate task within or across splits
    pngs = list(DATA.rglob("*.png"))
    assert max(p.stat().st_size for p in pngs) < 8_000


def run_make_data(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "make_data.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_manifest_check_passes_then_fails_on_corruption(tmp_path):
    assert run_make_data("--check").returncode == 0
    copy = tmp_path / "tasks"
    shutil.copytree(DATA, copy)
    assert run_make_data("--check", "--out", str(copy)).returncode == 0
    victim = sorted((copy / "val" / "images").glob("*.png"))[0]
    img = Image.open(victim).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(victim)
    (copy / "test" / "tasks.jsonl").write_text("")
    result = run_make_data("--check", "--out", str(copy))
    assert result.returncode != 0
    assert f"val/images/{victim.name}" in result.stderr and "test/tasks.jsonl" in result.stderr
