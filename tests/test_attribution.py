"""Stage-level attribution of wrong CoT answers against the known scenes."""

from __future__ import annotations

import pytest

from cotlib import attribution, stages, synth


def trace(task, caption: str, reasoning: str, conclusion: str) -> str:
    return stages.render("I will look and answer.", caption, reasoning, conclusion)


@pytest.mark.parametrize("seed", range(40))
def test_parse_caption_inverts_describe(seed):
    task = synth.make_task(seed)
    assert attribution.parse_caption(synth.describe(task.scene)) == task.scene
    assert attribution.score_caption(synth.describe(task.scene), task.scene).exact
    assert attribution.parse_caption(synth.listing(task.scene)) == task.scene
    assert attribution.score_caption("In the image: " + synth.listing(task.scene), task.scene).exact


def test_caption_items_found_missed_invented():
    task = synth.make_task(3, "count_color")
    objs = task.scene["objects"]
    first = objs[0]
    other = next(c for c in synth.COLORS if c != first["color"])
    wrong = synth.describe({"kind": "shapes", "objects": [{**first, "color": other}, *objs[1:]]})
    score = attribution.score_caption(wrong, task.scene)
    assert (score.right, score.missed, score.invented) == (len(objs) - 1, 1, 1)
    fewer = synth.describe({"kind": "shapes", "objects": objs[1:]})
    assert attribution.score_caption(fewer, task.scene).missed == 1
    assert attribution.score_caption("I see nothing I can name.", task.scene).right == 0


def test_each_failure_goes_to_its_stage():
    task = next(t for t in (synth.make_task(i, "count_sum") for i in range(50))
                if int(t.answer) >= 2)
    caption = synth.describe(task.scene)
    steps = " ".join(synth.solve(task.prompt_question(), task.scene)[1])
    right = trace(task, caption, f"{steps} So the answer is {task.answer}.", task.answer)
    assert attribution.attribute(task, right).stage is None
    # copy: the reasoning reached the right answer, the conclusion says another
    wrong_answer = str(int(task.answer) + 1)
    copy = trace(task, caption, f"{steps} So the answer is {task.answer}.", wrong_answer)
    assert attribution.attribute(task, copy).stage == "copy"
    # reasoning: a right caption, a reasoning that ends elsewhere, copied faithfully
    reason = trace(task, caption, f"So the answer is {wrong_answer}.", wrong_answer)
    assert attribution.attribute(task, reason).stage == "reasoning"
    # perception: a caption with one object fewer gives another answer, reasoned over faithfully
    objs = task.scene["objects"]
    for k in range(len(objs)):
        seen = {"kind": "shapes", "objects": objs[:k] + objs[k + 1:]}
        answer = synth.solve(task.prompt_question(), seen)[0]
        if answer != task.answer:
            break
    perception = trace(task, synth.describe(seen), f"So the answer is {answer}.", answer)
    result = attribution.attribute(task, perception)
    assert result.stage == "perception" and result.caption.missed == 1
    # format: no stages at all
    assert attribution.attribute(task, "I cannot tell").stage == "format"


def test_attribution_table_counts():
    tasks = synth.make_tasks(11, seed=21)
    outputs = [trace(t, synth.describe(t.scene), f"So the answer is {t.answer}.", t.answer)
               for t in tasks]
    outputs[0] = "no stages"
    table = attribution.attribution_table(tasks, outputs)
    assert table["n"] == 11 and table["correct"] == 10
    assert table["wrong_by_stage"] == {"format": 1, "perception": 0, "reasoning": 0, "copy": 0}
    assert table["captions"]["exact"] == 10
