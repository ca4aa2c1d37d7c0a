"""The task-type registry (cotlib.synth.registry): the refactor changed no task, image, question,
answer, solver step, teacher wording, scene-check verdict or tokenizer corpus (digests recorded
from the code before the registry, commit eb55722), an unknown type is an error, and a new type is
one entry: bar_sum, opt-in, end to end (generate, render, solve, the local teacher, the filter)."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pytest
from PIL import Image

from cotlib import images, models, stages, synth, teacher, teacher_server
from cotlib.filtering import filter_traces, scene_problem
from cotlib.teacher_server import traces

#: The default mix before the registry, in its order (it fixes the type make_task(seed) draws).
DEFAULT_TYPES = ["count_color", "count_shape", "count_color_shape", "compare_counts",
                 "count_sum", "spatial", "color_of_shape", "bar_max", "bar_min", "bar_diff",
                 "bar_value"]

#: sha256 digests computed with the code before the registry (commit eb55722, synth.py as one
#: module, the teacher's _PLANS table, models.course_corpus's typed word list, filtering's scene
#: check reading kinds by hand) by the functions below.
GOLDEN = {
    "default_0_2000": "4bb01a5099a41a0898165c975892375f95ff524dfd9e033c3d2b869e064809c2",
    "splits_1e6": "cb5b82da00b169683a3deecca0354c2831c2c9d8adc92a8e6af6eb91c031cb8d",
    "pretrain_1e7": "7b7659ba5672f638925924e37a7a855a25672ddbb0e602d71c87555076de1cda",
    "make_tasks_330": "4914c29b0e4e1934ba188393ece567471ebf6471752a6b5af15ac746614f5f91",
    "task_types": "b5571e1ebc808e6672cf4717bb75519063eed9c0029aa802f94d13ff3c2370b4",
    "drafts": "8e01e23eca92d5a04772947d87ffc4ff28d6cfad2399d92ae07c83ef38a5e2fd",
    "corpus": "9665dc8af993100730467f01ae9a34f0002688d8892b574c50f6833680ae1abd",
    "scene_checks": "66421cdb9a91bda5e06302955a84fbc1b945c89cbb4a66cce06d1a676c8626c5",
    "type_count_color": "e8c4a533cc58fff8b6917ed363d4a64eb96497abac870220d155183de401cbaf"
                        "78c76211fa1a94f7824f0fd96bdbcb5d57118abd980f7d54486ea8abf27531bb",
    "type_count_shape": "f93bbad13003c871708da03fab33ee320c7e7443ab5db5a0e9856df3b909aa87"
                        "06faeb5c66e055de9edaaa371cc8bea80aceca8b4d8a87f402ac3d8521815988",
    "type_count_color_shape": "27cd2014edab57d407bbba41389233dd011e9ed73a3464332766262765a4a9e4"
                              "26c6246809d0b73bd648e6a4f649d74c899abf96d931eca504f69ae8f8d51dfe",
    "type_compare_counts": "663b392efeacf2d4a478774f49f12cf1a063d38fae8168e70cf82fa148eb4b14"
                           "0389f2713520e62cdd9f81cd6f35067266d651969b96e103cdb3429e43ed426e",
    "type_count_sum": "862f40c797c4e78ff7143fc1b777026f98a188e5e32e11300da5a6b1babace83"
                      "e2a333ad64f470e20a01a8a1c8cd3d19d862ae23a07794626534881c11477523",
    "type_spatial": "c576f98a2de1f46f0b77987146f7405798a61ce025cf070fe3e924053ca469b6"
                    "d797adcde298231c3cfc654e383e45beb3245b50515cdb446cde46a6b9f7935f",
    "type_color_of_shape": "699221c05f7fd106f9ae0b715e5bae790bc498386ad810e5b5175a13770fcae9"
                           "fe14ce191b2028cea9caf4a7b577632a6f9309dcf137a694247d06ab19dc3799",
    "type_bar_max": "182c392b6b376067e1753179c98c82553259c6dfc7a23afa0e630d666da4af00"
                    "2a623fe607c9ff12e163f85a11c34dc87b3a82eaab6e8dbb5db325ba78353510",
    "type_bar_min": "37cd8055ef02d4bf37b91c5a1a0a20ac4c8067691d00c8d4a116efeb03798fc3"
                    "f5cf92b4b115c7617f3224e595edf1d4b1e6da47dd7d0e89fa8f928c11b49d6e",
    "type_bar_diff": "057abcf08c31ef83c3ef7b8e788e2564c16d839a78c2d283a5c5d2f9e539540b"
                     "02d5a3fff9da059884b70a9f1b737c1d210f2ede8911205e41295657a810fb56",
    "type_bar_value": "75bb9d1a1ed905ad2e322e53f60940668606a784c3dd9e5f5ede116387b5c9cb"
                      "63d05935198ee35ad5db591720b5199f015a7634dd08cc1b665089ab71411f99",
}


# -----------------------------------------------------------------------------
# the digests


def _task_bytes(task: synth.Task) -> bytes:
    """Everything a task is: its record (id, type, question, answer, options, letter, prompt,
    params, scene, seed), the solver's answer and steps, both captions, and the image's pixels."""
    answer, steps = synth.solve(task.prompt_question(), task.scene)
    extra = {"solved": answer, "steps": steps, "describe": synth.describe(task.scene),
             "listing": synth.listing(task.scene)}
    return (json.dumps([task.to_record("x.png"), extra], sort_keys=True).encode()
            + synth.render(task.scene).tobytes())


def tasks_digest(seeds, task_type=None, mc=None) -> str:
    h = hashlib.sha256()
    for s in seeds:
        h.update(_task_bytes(synth.make_task(s, task_type, mc)))
    return h.hexdigest()


def drafts_digest(n: int = 220) -> str:
    """The local teacher's drafts (plan, caption, reasoning, conclusion), conditioned and blind."""
    h = hashlib.sha256()
    for i, task in enumerate(synth.make_tasks(n, seed=77, mc_fraction=0.4)):
        url = images.image_to_data_url(task.get_image())
        for standard in (task.answer, None):
            d = traces.draft_trace(url, task.prompt_question(), standard, random.Random(i))
            h.update(json.dumps([d.stages, d.answer, d.solution, d.note]).encode())
    return h.hexdigest()


def _captions(task: synth.Task) -> list[str]:
    """Right and wrong captions (foreign colours, synonyms, too many objects, wrong values)."""
    d, listed = synth.describe(task.scene), synth.listing(task.scene)
    items = task.scene.get("objects") or task.scene.get("bars")
    c = items[0]["color"]
    out = [d, listed, d.replace(c, "pink", 1), d.replace(c, "violet", 1),
           listed.replace(c, "gold", 1), f"There are {len(items) + 1} objects.",
           f"There are {len(items)} {c} objects.", "I see 3 large red circles and a star.",
           "The chart is black and grey on white.", "A cube and an oval."]
    if task.scene["kind"] == "bars":
        b = items[0]
        out += [f"The {b['color']} bar has a value of {b['value']}.",
                f"The {b['color']} bar has a height of {b['value'] % 9 + 1}.",
                f"There are {len(items)} bars.", f"There are {len(items) + 2} bars."]
    return out


def scene_checks_digest() -> str:
    """The filter's scene check on 1,500 tasks x 14 captions x (no question, the question)."""
    h = hashlib.sha256()
    for seed in range(1500):
        task = synth.make_task(seed, DEFAULT_TYPES[seed % 11])
        for caption in _captions(task):
            for allowed in ("", task.prompt_question()):
                h.update(json.dumps(scene_problem(caption, task.scene, allowed)).encode())
    return h.hexdigest()


def fingerprints() -> dict[str, str]:
    out = {
        "default_0_2000": tasks_digest(range(2000)),
        "splits_1e6": tasks_digest(range(1_000_000, 1_000_500)),
        "pretrain_1e7": tasks_digest(range(10_000_000, 10_001_000)),
        "make_tasks_330": hashlib.sha256(json.dumps(
            [t.to_record() for t in synth.make_tasks(330, seed=1)]).encode()).hexdigest(),
        "task_types": hashlib.sha256(json.dumps(synth.TASK_TYPES).encode()).hexdigest(),
        "drafts": drafts_digest(),
        "corpus": hashlib.sha256("\n".join(models.course_corpus()).encode()).hexdigest(),
        "scene_checks": scene_checks_digest(),
    }
    for t in DEFAULT_TYPES:
        out[f"type_{t}"] = tasks_digest(range(150), t, None) + tasks_digest(range(60), t, True)
    return out


def test_the_registry_changed_nothing():
    """5,810 tasks (seeds 0-1,999 drawn by the default mix, 1e6 + 0-499 as the shipped splits,
    1e7 + 0-999 as the shipped base's pretraining, 210 of each type free-form and multiple
    choice), 440 local-teacher drafts, 42,000 scene checks and the tokenizer corpus hash as
    before the registry."""
    assert fingerprints() == GOLDEN


# -----------------------------------------------------------------------------
# the registry


def test_default_mix_is_the_course_types_in_order():
    assert list(synth.TASK_TYPES) == DEFAULT_TYPES
    assert set(synth.REGISTRY) == {*DEFAULT_TYPES, "bar_sum"}
    assert all(synth.make_task(seed).task_type != "bar_sum" for seed in range(3000))
    assert {t.task_type for t in synth.make_tasks(120, seed=2)} == set(DEFAULT_TYPES)


def test_every_type_is_complete():
    for name, kind in synth.REGISTRY.items():
        assert kind.name == name and kind.scene in synth.SCENE_KINDS
        assert kind.plans and all(isinstance(p, str) and p for p in kind.plans)
        for form in kind.forms:
            assert synth.TEMPLATES[form] == (name, kind.templates[form])
            assert synth.type_of_form(form) is kind


@pytest.mark.parametrize("call", [
    lambda: synth.make_task(0, "bar_total"),
    lambda: synth.make_tasks(3, task_types=["bar_max", "bar_total"]),
    lambda: synth.task_type("bar_total"),
    lambda: synth.answer_question({"kind": "bars", "bars": []}, "bar_max", {"form": "nope"}),
    lambda: synth.question_text("nope", {}),
])
def test_unknown_type_or_form_is_a_clear_error(call):
    with pytest.raises(ValueError, match=r"unknown (task type|question form) .*known: \["):
        call()


def test_register_refuses_a_clash_or_a_missing_part():
    bar_max = synth.task_type("bar_max")
    before = (dict(synth.REGISTRY), dict(synth.TASK_TYPES), dict(synth.TEMPLATES))

    def variant(**changes) -> synth.TaskType:
        fields = {f: getattr(bar_max, f) for f in ("name", "scene", "templates", "generate",
                                                  "solve", "plans", "number_range", "default")}
        return synth.TaskType(**{**fields, **changes})

    cases = {
        "already registered": variant(),
        "belong to another type": variant(name="bar_top"),
        "unknown scene kind": variant(name="pie_max", scene="pie", templates={"pie": "?"}),
        "plan wordings": variant(name="bar_top", templates={"bar_top": "Which?"}, plans=()),
        "at least one question template": variant(name="bar_top", templates={}),
    }
    for message, kind in cases.items():
        with pytest.raises(ValueError, match=message):
            synth.register(kind)
    assert (synth.REGISTRY, synth.TASK_TYPES, synth.TEMPLATES) == before


def test_scene_check_refuses_a_scene_of_no_known_kind():
    with pytest.raises(ValueError, match="unknown scene kind 'pie'"):
        scene_problem("A red slice.", {"kind": "pie", "slices": []})


# -----------------------------------------------------------------------------
# the new type, end to end


def png(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_bar_sum_generates_renders_and_solves():
    answers = set()
    for seed in range(200):
        for mc in (False, True):
            task = synth.make_task(seed, "bar_sum", mc)
            assert task == synth.make_task(seed, "bar_sum", mc)
            assert task.id == f"bar_sum-{seed}" + ("-mc" if mc else "")
            values = {b["color"]: b["value"] for b in task.scene["bars"]}
            p = task.params
            assert p["form"] == "bar_sum" and p["color"] != p["color2"]
            assert task.answer == str(values[p["color"]] + values[p["color2"]])
            answers.add(task.answer)
            scene = synth.scene_from_image(png(task.get_image()))
            assert scene == task.scene
            answer, steps = synth.solve(task.prompt_question(), scene)
            assert answer == task.answer
            a, b = values[p["color"]], values[p["color2"]]
            assert steps[:3] == [f"The {p['color']} bar has value {a}.",
                                 f"The {p['color2']} bar has value {b}.",
                                 f"In total {a} + {b} = {a + b}."]
            parsed = synth.parse_question(task.prompt_question())
            assert (parsed.task_type, parsed.params, parsed.choices) == ("bar_sum", p,
                                                                          task.choices)
            if mc:
                assert steps[-1] == f"That matches option {task.answer_letter}."
                assert len(set(task.choices)) == 4
                assert all(2 <= int(c) <= 18 for c in task.choices)
    assert len(answers) >= 14  # sums from 2 to 18
    assert [t.task_type for t in synth.make_tasks(4, task_types=["bar_sum", "bar_max"])] == [
        "bar_sum", "bar_max", "bar_sum", "bar_max"]


def test_bar_sum_words_are_in_the_tokenizer_vocabulary():
    """Its question uses only the word list's words, so the tokenizer corpus stays as it was."""
    words = set(synth.vocabulary().split())
    template = synth.task_type("bar_sum").templates["bar_sum"]
    question = template.replace("{color2}", "").replace("{color}", "").rstrip("?").lower()
    assert set(question.split()) <= words
    assert synth.vocabulary() == synth.BASE_WORDS
    assert models.course_corpus()[-1] == synth.BASE_WORDS


def _trace(task: synth.Task, fault: str | None = None, seed: int = 0) -> str:
    body = {"model": teacher.LOCAL_MODEL, "messages": teacher.build_messages(task)}
    result = teacher_server.complete(body, seed=seed, fault=fault,
                                     fault_rng=random.Random(f"{task.id}:{seed}"))
    return result["choices"][0]["message"]["content"]


def _record(task: synth.Task, text: str) -> dict:
    return teacher.make_record(task.id, text, model="m", mode="conditioned")


def test_the_local_teacher_drafts_bar_sum_traces_the_filter_keeps():
    tasks = synth.make_tasks(24, seed=5, task_types=["bar_sum"], mc_fraction=0.5)
    plans = synth.task_type("bar_sum").plans
    texts = [_trace(t, seed=s) for s in (0, 1) for t in tasks]
    for task, text in zip(tasks * 2, texts, strict=True):
        parts = stages.parse(text).stages
        assert parts["SUMMARY"] in plans
        assert parts["CONCLUSION"] == task.answer
        assert "In total" in parts["REASONING"]
    verdicts = filter_traces([_record(t, x) for t, x in zip(tasks * 2, texts, strict=True)],
                             tasks, dedupe=False)
    assert [(v.task_id, v.reasons) for v in verdicts if not v.kept] == []
    wrong = filter_traces([_record(t, _trace(t, "wrong_answer")) for t in tasks], tasks,
                          allow_empty=True)
    assert {v.family for v in wrong} == {"answer"}


def test_the_filter_catches_a_wrong_bar_value_in_a_bar_sum_caption():
    task = synth.make_task(3, "bar_sum", False)
    bar = task.scene["bars"][0]
    good = stages.parse(_trace(task)).stages
    bad_caption = f"The {bar['color']} bar has a height of {bar['value'] % 9 + 1}."
    text = stages.render_dict({**good, "CAPTION": bad_caption})
    (verdict,) = filter_traces([_record(task, text)], [task], allow_empty=True)
    assert verdict.reasons == ["scene:wrong_value"]
