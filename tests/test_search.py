"""Stage-level beam search, best-of-N, scorers, judges (model, OpenAI-compatible), the tree."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cotlib import infer, models, search, stages, synth

TRACE = stages.render("I will count the shapes.", "A red circle and a blue square.",
                      "There are two shapes.", "2")


@pytest.fixture(scope="module")
def task():
    return synth.make_tasks(1, seed=5)[0]


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    return models.load(models.tiny("idefics3"), dtype="float32")


def _cand(i, text="x", logprobs=(-1.0,), closed=True, stage="SUMMARY"):
    return search.Candidate(i, stage, text, list(logprobs), "tag" if closed else "length",
                            closed)


CTX = search.JudgeContext("SUMMARY", "How many?", "")


# -----------------------------------------------------------------------------
# parsing and prompts


@pytest.mark.parametrize("text, choice", [
    ("Since it plans the count, I choose response [2].", 1),
    ("Since both are fine, I choose response 1.", 0),
    ("since X, i CHOOSE Response (2)", 1),
    ("I choose response #1 because it is shorter", 0),
    ("First I thought response 1, but I choose response 2.", 1),
    ("Response 2 is clearly better.", 1),
    ("Response 1 or response 2? Hard to say.", None),
    ("", None),
    (None, None),
    ("I choose response 3.", None),
])
def test_parse_judgement(text, choice):
    got, reason = search.parse_judgement(text)
    assert got == choice
    if text and text.lower().startswith("since") and choice is not None:
        assert reason and "choose" not in reason.lower()


def test_judge_prompts_are_stage_specific():
    assert set(search.JUDGE_PROMPTS) == {*stages.STAGES, search.ANSWER}
    assert len(set(search.JUDGE_PROMPTS.values())) == len(search.JUDGE_PROMPTS)
    for stage in search.JUDGE_PROMPTS:
        ctx = search.JudgeContext(stage, "How many?", "<SUMMARY> plan </SUMMARY>")
        text = search.judge_prompt(ctx, _cand(0, "alpha"), _cand(1, ""))
        assert "How many?" in text and "alpha" in text and "(empty)" in text
        assert "I choose response [1/2]" in text


# -----------------------------------------------------------------------------
# scorers and the knockout


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_knockout_finds_the_best_in_n_minus_1_matches(n):
    scores = [-3.0, -0.5, -2.0, -0.1, -4.0][:n]
    cands = [_cand(i, logprobs=[s]) for i, s in enumerate(scores)]
    winner, matches = search.knockout(CTX, cands, search.loglik_scorer())
    assert winner == max(range(n), key=lambda i: scores[i])
    assert len(matches) == n - 1
    assert [m.round for m in matches] == sorted(m.round for m in matches)
    assert all(m.winner in (m.a, m.b) for m in matches)


def test_knockout_prefers_closed_candidates_without_asking():
    class Refuse(search.Scorer):
        def compare(self, ctx, pairs):
            raise AssertionError("the scorer should not be asked")

    cands = [_cand(0, closed=False, logprobs=[-0.1]), _cand(1, logprobs=[-9.0])]
    winner, (match,) = search.knockout(CTX, cands, Refuse())
    assert winner == 1 and match.by == "rule" and "malformed" in match.reason


def test_score_scorers():
    a, b = _cand(0, "short", [-1.0]), _cand(1, "a longer text", [-0.6, -0.6])
    assert search.loglik_scorer(alpha=1).compare(CTX, [(a, b)])[0].choice == 1
    assert search.loglik_scorer(alpha=0).compare(CTX, [(a, b)])[0].choice == 0
    by_len = search.function_scorer(lambda c: len(c.text))
    assert by_len.compare(CTX, [(a, b)])[0].choice == 1
    with_ctx = search.function_scorer(lambda c, ctx: ctx.question in c.text, name="mentions")
    assert with_ctx.name == "mentions"
    assert with_ctx.compare(CTX, [(a, _cand(1, "How many? two"))])[0].choice == 1
    nan = search.function_scorer(lambda c: float("nan") if c.index == 0 else -5.0)
    assert nan.compare(CTX, [(a, b)])[0].choice == 1
    tie = search.function_scorer(lambda c: 1.0)
    assert tie.compare(CTX, [(a, b)])[0].choice == 0
    assert search.length_normalised_loglik([]) == -math.inf


def test_model_judge_parses_and_falls_back(tiny, task, monkeypatch):
    model, processor = tiny
    seen = {}

    def fake_generate_text(model, processor, images, prompts, max_new_tokens):
        seen["prompts"] = prompts
        return ["Since it names the shapes, I choose response 2.", "no idea", "Response 1."]

    monkeypatch.setattr(infer, "generate_text", fake_generate_text)
    judge = search.judge_scorer(model, processor)
    ctx = search.JudgeContext("CAPTION", "How many?", "", task.get_image())
    pairs = [(_cand(0, logprobs=[-2.0]), _cand(1, logprobs=[-1.0])),
             (_cand(2, logprobs=[-1.0]), _cand(3, logprobs=[-2.0])),
             (_cand(4), _cand(5))]
    d = judge.compare(ctx, pairs)
    assert (d[0].choice, d[0].fallback, d[0].reason) == (1, False, "it names the shapes")
    assert d[1].fallback and d[1].choice == 0 and d[1].raw == "no idea"
    assert "malformed" in d[1].reason and "fallback" in d[1].by
    assert d[2].choice == 0 and not d[2].fallback
    assert all("describes the parts of the image" in p for p in seen["prompts"])


# -----------------------------------------------------------------------------
# an OpenAI-compatible judge on 127.0.0.1


@pytest.fixture
def fake_judge_server():
    app = FastAPI()
    replies: list[tuple[str, object]] = []
    seen: list[dict] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):  # Request: a module-level name (FastAPI resolves it)
        body = await request.json()
        seen.append(body)
        kind, value = replies.pop(0) if replies else ("text", "Since x, I choose response 2.")
        if kind == "status":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}},
                                status_code=value)
        return {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": value}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", replies, seen
    server.should_exit = True
    thread.join(timeout=5)


def test_openai_judge(fake_judge_server, task):
    from openai import OpenAI

    url, replies, seen = fake_judge_server
    client = OpenAI(base_url=url, api_key="test", max_retries=0, timeout=10)
    judge = search.openai_judge_scorer(client, "judge-model")
    replies += [("text", "Since it is precise, I choose response [2]."),
                ("text", "Both look good to me."), ("status", 500)]
    ctx = search.JudgeContext("REASONING", "How many?", "<SUMMARY> s </SUMMARY>",
                              task.get_image())
    pairs = [(_cand(0, "first"), _cand(1, "second")),
             (_cand(2, logprobs=[-1.0]), _cand(3, logprobs=[-0.2])),
             (_cand(4, logprobs=[-0.1]), _cand(5, logprobs=[-3.0]))]
    d = judge.compare(ctx, pairs)
    assert (d[0].choice, d[0].fallback, d[0].by) == (1, False, "openai judge (judge-model)"), d[0]
    assert d[1].fallback and d[1].choice == 1 and d[1].raw == "Both look good to me."
    assert d[2].fallback and d[2].choice == 0 and "judge call failed" in d[2].reason
    content = seen[0]["messages"][0]["content"]
    assert seen[0]["model"] == "judge-model"
    assert "first" in content[0]["text"] and "reasons better" in content[0]["text"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_judge_and_rater_retry_by_the_teachers_policy(fake_judge_server, task):
    """One retry policy: the client's own retries are turned off and its retry count goes to
    the teacher's (cotlib.teacher.complete_with_retries), which also retries a malformed 200."""
    from openai import OpenAI

    from cotlib import teacher

    url, replies, seen = fake_judge_server
    client = OpenAI(base_url=url, api_key="test", max_retries=1, timeout=10)
    judge = search.openai_judge_scorer(client, "judge-model")
    ctx = search.JudgeContext("REASONING", "How many?", "", task.get_image())
    pair = [(_cand(0, "first"), _cand(1, "second"))]
    replies += [("status", 500), ("text", "I choose response 2.")]
    d = judge.compare(ctx, pair)
    assert len(seen) == 2 and (d[0].choice, d[0].fallback) == (1, False), d[0]
    replies += [("status", 503), ("status", 500)]  # one retry, then the judge falls back
    d = judge.compare(ctx, pair)
    assert len(seen) == 4 and d[0].fallback and "InternalServerError" in d[0].reason
    assert judge._calls.max_retries == 0 and judge._policy.max_retries == 1

    rater = search.openai_reward_scorer(client, "rm")
    replies += [("text", ""), ("text", "Score: 7")]  # an empty 200 is retried like a 500
    assert rater.score(_cand(2, "third"), ctx) == 7.0
    assert len(seen) == 6 and rater.failures == 0
    built = search.openai_judge_scorer(teacher.TeacherConfig(base_url=url), "j")
    assert built._policy.max_retries == 1 and built._calls.max_retries == 0
    built.client.close()
    client.close()


def test_beam_search_with_an_openai_judge(fake_judge_server, tiny, task):
    from openai import OpenAI

    url, replies, seen = fake_judge_server
    model, processor = tiny
    client = OpenAI(base_url=url, api_key="test", max_retries=0, timeout=10)
    tree = search.beam_search_stages(model, processor, task.get_image(),
                                     task.prompt_question(), n=2,
                                     scorer=search.openai_judge_scorer(client, "j"),
                                     force_tokens_per_stage=2)
    assert [s.winner for s in tree.steps] == [1, 1, 1, 1]
    assert len(seen) == 4 and tree.fallbacks == 0
    so_far = [json.dumps(body) for body in seen]
    assert "(nothing yet)" in so_far[0] and "SUMMARY" in so_far[1]


# -----------------------------------------------------------------------------
# search methods on a tiny model


def test_beam_search_tree(tiny, task):
    model, processor = tiny
    seen_steps = []
    tree = search.beam_search_stages(model, processor, task.get_image(), task.prompt_question(),
                                     n=3, scorer=search.loglik_scorer(),
                                     force_tokens_per_stage=3, on_stage_end=seen_steps.append)
    assert [s.stage for s in tree.steps] == list(stages.STAGES) and seen_steps == tree.steps
    for step in tree.steps:
        assert len(step.candidates) == 3 and len(step.comparisons) == 2
        assert len({tuple(c.token_logprobs) for c in step.candidates}) > 1  # really sampled
        best = max(step.candidates, key=lambda c: c.mean_logprob)
        assert step.winner == best.index
        result = tree.answer.stages[step.stage]
        assert result.text == step.best.text
        assert result.token_logprobs == step.best.token_logprobs
    # the winners' tokens are exactly what the final answer was built from
    comp = tree.answer.completion_ids
    for step in tree.steps:
        ids = tree.answer.stages[step.stage].token_ids
        assert any(comp[k:k + len(ids)] == ids for k in range(len(comp)))
    text = tree.format()
    assert text.count("★") == 4 and "round 2" in text
    json.dumps(tree.to_dict())
    import matplotlib

    matplotlib.use("Agg")
    ax = search.draw_tree(tree)
    assert len(ax.texts) >= 4 * 3
    again = search.beam_search_stages(model, processor, task.get_image(),
                                      task.prompt_question(), n=3,
                                      scorer=search.loglik_scorer(), force_tokens_per_stage=3)
    assert again.answer.completion_ids == tree.answer.completion_ids  # seeded


def test_beam_search_with_the_models_own_judge_survives_garbage(tiny, task):
    model, processor = tiny
    tree = search.beam_search_stages(model, processor, task.get_image(), task.prompt_question(),
                                     n=2, scorer=search.judge_scorer(model, processor,
                                                                     max_new_tokens=4),
                                     force_tokens_per_stage=2)
    assert tree.scorer == "model judge"
    assert tree.fallbacks == 4  # a random model never answers in the judge's format
    assert all(c.raw is not None for s in tree.steps for c in s.comparisons)


def test_best_of_n_and_greedy(tiny, task):
    model, processor = tiny
    image, question = task.get_image(), task.prompt_question()
    best = search.best_of_n(model, processor, image, question, n=3,
                            scorer=search.loglik_scorer(), force_tokens_per_stage=2)
    (step,) = best.steps
    assert step.stage == search.ANSWER and len(step.candidates) == 3
    assert best.answer.text == step.best.text
    plain = search.greedy(model, processor, image, question, force_tokens_per_stage=2)
    reference = infer.generate_stages(model, processor, image, question, force_tokens_per_stage=2)
    assert plain.answer.completion_ids == reference.completion_ids
    assert all(len(s.candidates) == 1 and not s.comparisons for s in plain.steps)
    with pytest.raises(ValueError, match="n must be"):
        search.beam_search_stages(model, processor, image, question, n=0)


def test_beam_search_on_a_model_that_writes_tags(tiny_cache, task):
    torch.manual_seed(0)
    model, processor = models.load(models.tiny("idefics3"), dtype="float32")
    infer.memorise(model, processor, task.get_image(), task.prompt_question(), TRACE)
    tree = search.beam_search_stages(model, processor, task.get_image(), task.prompt_question(),
                                     n=3, scorer=search.loglik_scorer())
    assert all(c.closed for s in tree.steps for c in s.candidates)
    assert tree.answer.ok and tree.answer.final_answer == "2"
    best = search.best_of_n(model, processor, task.get_image(), task.prompt_question(), n=2,
                            scorer=search.loglik_scorer())
    assert best.answer.final_answer == "2"


# -----------------------------------------------------------------------------
# SWIRES


def scripted(table):
    """A scorer that reads each candidate's score from ``table[stage][index]``."""
    return search.function_scorer(lambda c: table[c.stage][c.index], name="scripted")


SWIRES_KW = dict(m=3, n=2, k=2, top=2, force_tokens_per_stage=2)


def _swires(tiny, task, table, **kwargs):
    model, processor = tiny
    return search.swires(model, processor, task.get_image(), task.prompt_question(),
                         scorer=scripted(table), **{**SWIRES_KW, **kwargs})


def test_swires_without_retrace(tiny, task):
    table = {"SUMMARY": [0.0], "CAPTION": [1.0, 5.0, 3.0],
             "REASONING": [2.0, 9.0, 8.0, 1.0], "CONCLUSION": [0.5, 0.7]}
    seen = []
    tree = _swires(tiny, task, table, cutoff=4.0, on_stage_end=seen.append)
    assert tree.method == "swires" and seen == tree.steps
    assert [s.stage for s in tree.steps] == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
    cap, rea, con = tree.steps[1:]
    assert cap.kept == [1, 2] and cap.winner == 1  # best two captions by score
    # two reasonings from each kept caption, best caption first
    assert [(c.index, c.parent) for c in rea.candidates] == [(0, 1), (1, 1), (2, 2), (3, 2)]
    assert rea.kept == [1, 2] and "retrace" not in rea.note  # second best 8.0 > cutoff 4.0
    # one conclusion per top reasoning; the best-scored one is the answer
    assert [c.parent for c in con.candidates] == [1, 2] and con.winner == 1
    assert tree.answer.stages["CONCLUSION"].text == con.candidates[1].text
    assert tree.answer.stages["REASONING"].text == rea.candidates[2].text  # its parent
    assert tree.answer.stages["CAPTION"].text == cap.candidates[2].text  # and its parent
    assert tree.answer.stages["SUMMARY"].text == tree.steps[0].candidates[0].text
    assert [c.score for c in cap.candidates] == [1.0, 5.0, 3.0]
    # every sampled candidate appears once: the token count is the search's real cost
    assert sum(c.tokens for s in tree.steps for c in s.candidates) == 2 * (1 + 3 + 4 + 2)


def test_swires_retraces_keeping_the_old_candidates(tiny, task):
    # first pass: second-best reasoning 1.0 <= cutoff 4.0 -> retrace; the new caption 4 (7.0)
    # joins caption 1 (5.0) in the top two; its reasonings (6.0, 9.5) lift the second best
    table = {"SUMMARY": [0.0], "CAPTION": [1.0, 5.0, 3.0, 0.0, 7.0, 2.0],
             "REASONING": [1.0, 2.0, 0.5, 0.0, 6.0, 9.5], "CONCLUSION": [1.0, 2.0]}
    tree = _swires(tiny, task, table, cutoff=4.0, retraces=3)
    names = [(s.stage, s.note.split(";")[0].split(":")[0]) for s in tree.steps]
    assert [n for n, _ in names] == ["SUMMARY", "CAPTION", "REASONING", "CAPTION", "REASONING",
                                     "CONCLUSION"]
    first_r, cap2, second_r, con = tree.steps[2:]
    assert "retrace to CAPTION" in first_r.note and "second best [0] scores 1.000" in first_r.note
    assert cap2.note == "retrace 1" and [c.index for c in cap2.candidates] == [3, 4, 5]
    assert cap2.kept == [4, 1]  # the pool of all six captions, best first
    # caption 1 already has reasonings; only the newly kept caption 4 gets two more
    assert [(c.index, c.parent) for c in second_r.candidates] == [(4, 4), (5, 4)]
    assert second_r.kept == [5, 4] and "retrace to" not in second_r.note
    assert [c.parent for c in con.candidates] == [5, 4] and con.winner == 1
    assert tree.answer.stages["CAPTION"].text == cap2.candidates[1].text  # caption 4
    assert tree.answer.stages["REASONING"].text == second_r.candidates[0].text  # reasoning 4


def test_swires_stops_after_c_retraces(tiny, task):
    low = {"SUMMARY": [0.0], "CAPTION": [float(i) for i in range(12)],
           "REASONING": [-5.0] * 40, "CONCLUSION": [0.0, 1.0]}
    tree = _swires(tiny, task, low, cutoff=0.0, retraces=2)
    stages_seen = [s.stage for s in tree.steps]
    assert stages_seen.count("CAPTION") == 3 and stages_seen.count("REASONING") == 3
    assert "all 2 retraces are used" in tree.steps[-2].note
    none = _swires(tiny, task, low, cutoff=0.0, retraces=0)
    assert [s.stage for s in none.steps] == list(stages.STAGES)
    text = tree.format()
    assert "retrace 2" in text and "from [" in text and "score" in text
    json.dumps(tree.to_dict())
    import matplotlib

    matplotlib.use("Agg")
    ax = search.draw_tree(tree)
    assert any("retrace 1" in t.get_text() for t in ax.texts)


def test_swires_default_scorer_and_errors(tiny, task):
    model, processor = tiny
    image, question = task.get_image(), task.prompt_question()
    tree = search.swires(model, processor, image, question, force_tokens_per_stage=2,
                         cutoff=-100.0)
    assert tree.scorer.startswith("loglik") and len(tree.steps) == 4
    for step in tree.steps:
        for c in step.candidates:
            assert c.score == pytest.approx(c.mean_logprob)
    again = search.swires(model, processor, image, question, force_tokens_per_stage=2,
                          cutoff=-100.0)
    assert again.answer.completion_ids == tree.answer.completion_ids  # seeded
    with pytest.raises(ValueError, match="only compares pairs"):
        search.swires(model, processor, image, question,
                      scorer=search.judge_scorer(model, processor))
    with pytest.raises(ValueError, match="m must be"):
        search.swires(model, processor, image, question, m=0)


def test_swires_unclosed_candidates_rank_last():
    cands = [_cand(0, closed=False), _cand(1), _cand(2), _cand(3)]
    for c, score in zip(cands, [9.0, 1.0, float("nan"), 1.0]):
        c.score = score
    assert search._rank(cands) == [1, 3, 2, 0]  # ties keep order; NaN last of the closed


def test_swires_on_a_model_that_writes_tags(tiny_cache, task):
    torch.manual_seed(0)
    model, processor = models.load(models.tiny("idefics3"), dtype="float32")
    infer.memorise(model, processor, task.get_image(), task.prompt_question(), TRACE)
    tree = search.swires(model, processor, task.get_image(), task.prompt_question(),
                         m=2, n=1, k=2, top=1, retraces=1)
    assert tree.answer.ok and tree.answer.final_answer == "2"
    # a confident model: every candidate closes, mean log-prob near 0, no retrace
    assert all(c.closed for s in tree.steps for c in s.candidates)
    assert [s.stage for s in tree.steps] == list(stages.STAGES)


@pytest.mark.parametrize("text, value", [("Score: 7", 7.0), ("score=3.5.", 3.5), ("8", 8.0),
                                         ("**Score:** 9", 9.0), ("4/10", 4.0),
                                         ("no idea", None), ("", None)])
def test_parse_rating(text, value):
    assert search.parse_rating(text) == value


def test_swires_with_an_openai_rater(fake_judge_server, tiny, task):
    from openai import OpenAI

    url, replies, seen = fake_judge_server
    model, processor = tiny
    client = OpenAI(base_url=url, api_key="test", max_retries=0, timeout=10)
    rater = search.openai_reward_scorer(client, "rm")
    # summary, 2 captions, 2 reasonings (from the kept caption), 1 conclusion
    replies += [("text", "Score: 5"), ("text", "Score: 2"), ("text", "Score: 8"),
                ("text", "I like it"), ("status", 500), ("text", "Score: 6")]
    tree = search.swires(model, processor, task.get_image(), task.prompt_question(),
                         m=2, n=1, k=2, top=1, retraces=0, cutoff=5.0, scorer=rater,
                         force_tokens_per_stage=2)
    assert len(seen) == 6 and rater.failures == 2
    cap, rea = tree.steps[1], tree.steps[2]
    assert [c.score for c in cap.candidates] == [2.0, 8.0] and cap.kept == [1]
    assert all(math.isnan(c.score) for c in rea.candidates)
    assert "rater call failed" in rater.log[4][2]
    first = seen[0]["messages"][0]["content"]
    assert "Score: N" in first[0]["text"] and "summaries" in first[0]["text"]
    assert first[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert tree.scorer == "openai rater (rm)"


def test_knockout_odd_counts_and_ties():
    scores = [1.0, 3.0, 3.0, 0.5, 2.0]
    cands = [_cand(i, logprobs=[s]) for i, s in enumerate(scores)]
    winner, matches = search.knockout(CTX, cands, search.loglik_scorer())
    # round 1: 0-1, 2-3, 4 has a bye; round 2: 1-2, 4 has a bye; round 3: 1-4
    assert [(m.round, m.a, m.b, m.winner) for m in matches] == [
        (1, 0, 1, 1), (1, 2, 3, 2), (2, 1, 2, 1), (3, 1, 4, 1)]
    assert winner == 1  # the tie 3.0 vs 3.0 goes to the earlier candidate


def test_the_package_reexports_its_names_and_keeps_modules_short():
    """cotlib.search is a package of short modules; callers keep writing ``search.X`` (and
    ``search._rank``, SWIRES' ranking under its former private name)."""
    import importlib
    from pathlib import Path

    folder = Path(search.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(lengths) > 1 and max(lengths.values()) <= 600, lengths
    assert all(hasattr(search, name) for name in search.__all__)
    assert search._rank is search.rank_candidates
    assert search.swires.__module__ == "cotlib.search.retracing"
    # each module imports only the ones above it: tree, scorers, judges, beam, retracing
    order = ["tree", "scorers", "judges", "beam", "retracing", "drawing"]
    for i, name in enumerate(order):
        text = (folder / f"{name}.py").read_text()
        later = [m for m in order[i + 1:] if f"cotlib.search.{m} import" in text]
        assert not later, f"{name} imports {later}"
        importlib.import_module(f"cotlib.search.{name}")
