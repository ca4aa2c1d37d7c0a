"""Notebook 06: decode one stage on a cache, and the pairwise knockout."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cotlib import stages
from cotlib.checks.core import Case, call, checker, miss, short


def _stage_text(tok, ids: list[int], limit: int = 70) -> str:
    text = tok.decode(ids, skip_special_tokens=True)
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@checker
def check_decode_stage(fn: Callable, model, processor, image, question: str,
                       budgets: Iterable[int | None] = (None, 3)) -> bool:
    """Check a learner's greedy ``decode_one_stage(state, max_new_tokens) -> (token_ids,
    stop)`` against :func:`cotlib.infer.decode_stage`, stage by stage on the same cache: each of
    the four stages at its default budget (a model that writes tags stops at them), then
    SUMMARY with a budget of 3 tokens."""
    from cotlib import infer

    title = "decode_one_stage"
    tok = getattr(processor, "tokenizer", processor)
    cases: list[tuple[str, int, int | None]] = [
        (stage, i, None) for i, stage in enumerate(stages.STAGES)]
    cases += [("SUMMARY", 0, b) for b in budgets if b is not None]
    state = None
    for stage, index, budget in cases:
        if budget is not None or index == 0:
            state = infer.start(model, processor, [image], [question])
        limit = budget if budget is not None else infer.DEFAULT_MAX_TOKENS[stage]
        mine = state.repeat(1)  # a copy: its own cache
        name = f"{stage} with max_new_tokens={limit}"
        ok, got = call(title, name, fn, mine, limit)
        if not ok:
            return False
        ref = infer.decode_stage(state, max_new_tokens=limit)[0]
        want = (list(ref.token_ids), ref.stop)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return miss(title, name, repr(got)[:80], "a pair (token_ids, stop)",
                        "return (list of chosen token ids, 'tag' | 'length' | 'eos')")
        ids, stop = list(got[0]), got[1]
        if (ids, stop) == want:
            continue
        got_s = f"{len(ids)} tokens {_stage_text(tok, ids)}, stop {stop!r}"
        want_s = f"{len(want[0])} tokens {_stage_text(tok, want[0])}, stop {want[1]!r}"
        first = next((k for k, (a, b) in enumerate(zip(ids, want[0])) if a != b), None)
        if ids and want[0] and ids[0] != want[0][0]:
            hint = ("the first token differs: feed the stage's opening tokens "
                    "(state.rows[0].pending) before choosing, then take argmax of state.logits[0]")
        elif first is not None:
            hint = (f"token {first} differs: after choosing a token, feed it "
                    "(infer.feed(state, [[token]])) before reading state.logits again")
        elif ids == want[0]:
            hint = ("right tokens, wrong reason: 'tag' if the closing tag appeared, else "
                    "'length' at the budget ('tag' wins when both happen on the same token), "
                    "'eos' for the end-of-answer token")
        elif len(ids) < len(want[0]):
            hint = ("you stopped too early: stop when the decoded text contains the closing "
                    f"tag {stages.close_tag(stage)!r}, or after max_new_tokens tokens")
        elif want[1] == infer.TAG:
            hint = (f"decode the tokens so far after each new one and stop as soon as the "
                    f"closing tag {stages.close_tag(stage)!r} is in the text — keep the token "
                    "that completed it")
        else:
            hint = "stop after exactly max_new_tokens tokens (count them before feeding the next)"
        return miss(title, name, got_s, want_s, hint)
    print(f"✅ {title}: the same tokens and stops as infer.decode_stage in all {len(cases)} "
          "cases")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 06: the pairwise knockout
# --------------------------------------------------------------------------------------------

def knockout_cases() -> list[Case]:
    """Cases for notebook 06's ``knockout(scores, closed) -> (winner, matches)``; the expected
    values come from :func:`cotlib.search.knockout` with a fixed-score scorer."""
    from cotlib import search

    def case(name: str, scores: list[float], closed: list[bool] | None, hint: str) -> Case:
        closed = closed if closed is not None else [True] * len(scores)
        cands = [search.Candidate(i, "CAPTION", f"c{i}", [], "tag" if c else "length", c)
                 for i, c in enumerate(closed)]
        scorer = search.ScoreScorer("fixed", lambda c, ctx: scores[c.index])
        winner, comps = search.knockout(search.JudgeContext("CAPTION", "q", ""), cands, scorer)
        return Case(name, (list(scores), list(closed)),
                    (winner, [(m.round, m.a, m.b, m.winner) for m in comps]), hint)

    return [
        case("four candidates", [0.1, 0.7, 0.4, 0.2], None,
             "Round 1 pairs 0-1 and 2-3; the winners meet in round 2."),
        case("one candidate", [0.3], None, "A single candidate wins without any match."),
        case("five candidates (odd)", [0.5, 0.2, 0.1, 0.9, 0.3], None,
             "With an odd number the last one gets a bye: it goes on to the next round without "
             "a match (and is not recorded as one)."),
        case("three candidates", [0.2, 0.1, 0.9], None,
             "Pairs are taken in order (0-1), the odd one (2) waits for round 2."),
        case("six candidates (odd in round 2)", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], None,
             "Round 2 has three players: pair the first two, the third gets a bye."),
        case("a tie", [0.5, 0.5, 0.2, 0.1], None,
             "On a tie the first candidate of the pair wins (a strict > for the second)."),
        case("all tied", [1.0, 1.0, 1.0, 1.0, 1.0], None,
             "On a tie the first candidate of the pair wins."),
        case("the best did not close its stage", [0.9, 0.1, 0.3], [False, True, True],
             "A candidate that closed its stage beats one that did not, whatever the scores."),
        case("none closed", [0.2, 0.6, 0.1], [False, False, False],
             "When both or neither closed, the scores decide."),
    ]


@checker
def check_knockout(fn: Callable) -> bool:
    """Check a learner's ``knockout(scores, closed) -> (winner, [(round, a, b, winner), …])``
    against :func:`cotlib.search.knockout` on fixed scores."""
    title = "knockout"
    cases = knockout_cases()
    for case in cases:
        ok, got = call(title, case.name, fn, *(list(a) for a in case.args))
        if not ok:
            return False
        try:
            got = (int(got[0]), [tuple(int(v) for v in m) for m in got[1]])
        except Exception:
            return miss(title, case.name, repr(got)[:80], "(winner, [(round, a, b, winner), …])",
                        "return the winner's index and the list of matches in play order",
                        short(case.args))
        if got != case.expected:
            hint = case.hint
            if got[0] == case.expected[0]:
                hint = "right winner, but the matches differ: " + case.hint
            return miss(title, case.name, repr(got), repr(case.expected), hint,
                        short(case.args))
    print(f"✅ {title}: all {len(cases)} cases pass — the same matches as search.knockout")
    return True
