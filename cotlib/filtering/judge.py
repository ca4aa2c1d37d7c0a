"""The LLM judge (LLaVA-CoT's second teacher call): its request, a rule-based local reply, and
a check that asks a teacher."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cotlib import stages
from cotlib.filtering.checks import Check, excerpt, is_refusal, parse_record
from cotlib.normalize import answers_match

# -----------------------------------------------------------------------------
# the LLM judge (LLaVA-CoT's second teacher call)

#: System message of a judge request. The judge sees only the response and the standard answer.
JUDGE_INSTRUCTION = (
    "You check answers. You are given a response to a question about an image and the "
    "question's standard answer. Reply valid if the response is not a refusal and gives the "
    "same answer as the standard answer: the meaning must be the same; case, punctuation, "
    "units, number format (3 or three) and, for multiple choice, the option letter or the "
    "option's text may differ. Reply invalid if the response refuses, hedges between several "
    "answers, or gives a different answer. Reply with one word: valid or invalid."
)


def judge_request_text(response: str, standard_answer: str) -> str:
    """The user message of a judge request.

    >>> print(judge_request_text("B", "B"))
    Response: B
    Standard answer: B
    """
    return f"Response: {response.strip()}\nStandard answer: {str(standard_answer).strip()}"


def judge_messages(response: str, standard_answer: str) -> list[dict]:
    """The chat messages of a judge request: text only (no image), as in LLaVA-CoT."""
    return [{"role": "system", "content": JUDGE_INSTRUCTION},
            {"role": "user", "content": judge_request_text(response, standard_answer)}]


_JUDGE_RE = re.compile(r"^Response:[ \t]*(?P<response>.*)\nStandard answer:[ \t]*(?P<answer>.*)$",
                       re.DOTALL)


def parse_judge_request(text: str) -> tuple[str, str] | None:
    """``(response, standard answer)`` from a judge request's user text, else None.

    >>> parse_judge_request(judge_request_text("three", "3"))
    ('three', '3')
    """
    m = _JUDGE_RE.match((text or "").strip())
    return (m["response"].strip(), m["answer"].strip()) if m else None


_OPTION_RE = re.compile(r"^(?P<answer>.*?)\s*\(option (?P<letter>[A-Z])\)$", re.DOTALL)


def judge_standard_answer(task: Any) -> str:
    """The standard answer a judge request carries: the one a teacher is conditioned on
    (:func:`cotlib.teacher.standard_answer`: the option's text for multiple choice), followed by
    ``(option X)`` for multiple choice, since a trace may conclude with the text or the letter.

    >>> from cotlib import synth
    >>> t = synth.make_task(7, "bar_value", multiple_choice=True)
    >>> judge_standard_answer(t) == f"{t.answer} (option {t.answer_letter})"
    True
    """
    from cotlib import teacher

    letter = getattr(task, "answer_letter", None)
    text = teacher.standard_answer(task)
    return f"{text} (option {letter})" if getattr(task, "choices", None) and letter else text


def local_judge_reply(text: str) -> str:
    """What a rule-based judge answers to a judge request: "valid" or "invalid" (refusals and
    answers that do not match by :func:`cotlib.normalize.answers_match` are invalid). The local
    teacher can serve this for requests whose system message is :data:`JUDGE_INSTRUCTION`.

    >>> local_judge_reply(judge_request_text("Three.", "3"))
    'valid'
    >>> local_judge_reply(judge_request_text("I'm sorry, I can't help with that.", "3"))
    'invalid'
    >>> [local_judge_reply(judge_request_text(r, "blue (option B)")) for r in ("B", "Blue.", "A")]
    ['valid', 'valid', 'invalid']
    """
    parsed = parse_judge_request(text)
    if parsed is None:
        return "invalid"
    response, answer = parsed
    option = _OPTION_RE.match(answer)  # multiple choice: the text or the letter
    golds = [option["answer"], option["letter"]] if option else [answer]
    if is_refusal(response) or not any(answers_match(response, g) for g in golds):
        return "invalid"
    return "valid"


def parse_judge_reply(reply: str | None) -> str | None:
    """"valid", "invalid" or None (unclear) from a judge's reply (the word anywhere in it; a
    reply that says both counts as "invalid").

    >>> parse_judge_reply("Valid."), parse_judge_reply("**invalid**"), parse_judge_reply("hmm")
    ('valid', 'invalid', None)
    """
    words = re.findall(r"[a-z]+", (reply or "").lower())
    if not words:
        return None
    pairs = set(zip(words, words[1:]))
    if "invalid" in words or ("not", "valid") in pairs:  # "invalid" wins any doubt
        return "invalid"
    if "valid" in words:
        return "valid"
    return None


def judge_with_teacher(config: Any, *, concurrency: int | None = None) -> Check:
    """A judge check that asks the teacher (``cotlib.teacher.TeacherConfig``: OpenAI, vLLM or
    the local teacher) whether the CONCLUSION is valid against the standard answer.

    Reasons: ``judge:invalid`` (the judge said so), ``judge:unclear`` (neither word in the
    reply), ``judge:error`` (the call failed after ``config.max_retries`` retries, under the
    teacher run's own retry policy: :func:`cotlib.teacher.replies.complete_with_retries`).
    Tasks with no standard answer are not judged. ``filter_traces`` calls it only on traces
    that passed every other check, ``concurrency`` (default: the config's) at a time.
    """
    import openai

    from cotlib import teacher

    key = teacher.key_for(config)  # OpenAI's key goes to OpenAI only (resolve_api_key)
    # the SDK's retries off: the teacher's policy retries (also a malformed 200)
    client = teacher.openai_client(config, key=key, max_retries=0, timeout=config.timeout_s)

    def judge(record: Mapping, task: Any) -> tuple[str, str] | None:
        if task is None or getattr(task, "answer", None) in (None, ""):
            return None
        conclusion = parse_record(record).stages.get("CONCLUSION") or stages.final_answer(
            record.get("text") or "")
        standard = judge_standard_answer(task)
        messages = judge_messages(conclusion, standard)
        try:
            reply = teacher.complete_with_retries(lambda: client.chat.completions.create(
                model=config.model, messages=messages, max_tokens=8, temperature=0), config).text
        except openai.OpenAIError as err:
            return "judge:error", teacher.redact(f"{type(err).__name__}: {err}", key)[:300]
        except teacher.BadResponse as err:
            return "judge:error", teacher.redact(f"bad_response:{err.kind}: {err}", key)[:300]
        verdict = parse_judge_reply(reply)
        if verdict == "valid":
            return None
        if verdict == "invalid":
            return "judge:invalid", f"judge replied {excerpt(reply or '', 60)!r}"
        return "judge:unclear", f"judge replied {excerpt(reply or '', 60)!r}"

    judge.concurrency = concurrency or getattr(config, "concurrency", 1)  # type: ignore[attr-defined]
    judge.close = client.close  # type: ignore[attr-defined]
    return judge
