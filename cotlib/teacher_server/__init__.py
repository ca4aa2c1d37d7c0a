"""A local OpenAI-compatible teacher: it reads the image in the request and writes a trace.

It speaks the ``/v1/chat/completions`` protocol, so the same ``openai`` client code talks to it,
to OpenAI and to a vLLM server. It sees ONLY the request: it decodes the image data URL, recovers
the exact scene from the pixels (:func:`cotlib.synth.scene_from_image`), parses the question (and
the standard answer, in conditioned mode) with :func:`cotlib.teacher.parse_request_text`, solves
it with :func:`cotlib.synth.solve`, and writes the four stages:

- SUMMARY: a plan for this kind of question;
- CAPTION: :func:`cotlib.synth.listing` of the scene (cell by cell, or bar by bar: compact, and the
  form the shipped base learned to caption in);
- REASONING: the solver's steps;
- CONCLUSION: the answer (the option letter for multiple choice). In conditioned mode it is the
  given standard answer; if that disagrees with the solver, the trace still concludes with it,
  as GPT-4o was instructed to (the disagreement goes to the injection log as ``answer_disagrees``).

An image that is not a course scene (a photo) or a question that is not a course template still
gets a well-formed trace that says it can only read course scenes (conclusion: the standard
answer when given, else "I cannot tell from this image."), logged as ``not_a_scene`` /
``unknown_question``. Wording varies among a few phrasings, chosen deterministically from a hash
of the request and the server seed, so identical requests get identical traces.

Faults (:class:`Faults`) are drawn per request: transport faults (429 with ``Retry-After``, 500)
first, from one seeded RNG in arrival order (so a retry can succeed); then content faults
(refusal, malformed format, wrong answer), from the seed and the request's key (so the same
tasks get the same faults whatever the client's concurrency, and runs repeat). Every fault is
appended to ``app.state.injections`` (served at ``GET /v1/cotlib/injections``) with the request's
:func:`cotlib.teacher.request_key`; nothing in the response itself marks it.

It also answers the filter's LLM judge (:func:`cotlib.filtering.judge_with_teacher`): a text-only
request whose system message is :data:`cotlib.filtering.JUDGE_INSTRUCTION` gets "valid" or
"invalid" from :func:`cotlib.filtering.local_judge_reply` (after the latency; never a fault).

Token counts are rough: ``len(text) // 4`` for text plus 85 per image (GPT-4o's low-detail image
cost), at least 1.

>>> from cotlib import synth, teacher
>>> task = synth.make_task(0, "count_color")
>>> body = {"model": "m", "messages": teacher.build_messages(task)}
>>> text = complete(body)["choices"][0]["message"]["content"]
>>> from cotlib import stages
>>> stages.parse(text).ok, stages.final_answer(text) == task.answer
(True, True)

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.teacher_server.settings` (model name, limits, :class:`Faults`),
:mod:`~cotlib.teacher_server.traces` (writing a trace from a request: pure functions),
:mod:`~cotlib.teacher_server.app` (the FastAPI app), :mod:`~cotlib.teacher_server.local`
(:class:`LocalTeacher`, ``cotlib teacher serve``).
"""

from cotlib.teacher_server.app import (
    create_app,
)
from cotlib.teacher_server.local import (
    LocalTeacher,
    build_parser,
    fault_args,
    faults_from_args,
    main,
    serve,
)
from cotlib.teacher_server.settings import (
    IMAGE_TOKENS,
    INJECTED,
    KEEP_ALIVE_S,
    MAX_BODY_BYTES,
    MAX_DECODE_PIXELS,
    MODEL_ID,
    MODELS,
    NOTES,
    Faults,
)
from cotlib.teacher_server.traces import (
    Draft,
    RequestError,
    check_body,
    check_model,
    complete,
    complete_request,
    count_tokens,
    draft_trace,
    image_size,
    judge_completion,
    judge_text,
    validate_request,
)

__all__ = [
    "Draft",
    "Faults",
    "IMAGE_TOKENS",
    "INJECTED",
    "KEEP_ALIVE_S",
    "LocalTeacher",
    "MAX_BODY_BYTES",
    "MAX_DECODE_PIXELS",
    "MODELS",
    "MODEL_ID",
    "NOTES",
    "RequestError",
    "build_parser",
    "check_body",
    "check_model",
    "complete",
    "complete_request",
    "count_tokens",
    "create_app",
    "draft_trace",
    "fault_args",
    "faults_from_args",
    "image_size",
    "judge_completion",
    "judge_text",
    "main",
    "serve",
    "validate_request",
]
