"""The teacher's prompt, in one place: the instruction, the request text and its inverse, the
standard answer, and the chat request built for a task."""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotlib import images, synth

MODES = ("conditioned", "blind")
LOCAL_MODEL = "cotlib-local-teacher"

# -----------------------------------------------------------------------------
# the prompt (the one place where its wording lives)

_FORMAT_RULES = """\
You write careful step-by-step answers to questions about an image. Your answers are used to \
teach a smaller model to reason in stages.

Answer in exactly four sections, in this order, each wrapped in its tags, with nothing before, \
between or after them except whitespace:
<SUMMARY>...</SUMMARY> One or two sentences: how you will solve the question.
<CAPTION>...</CAPTION> The parts of the image that matter for the question, described exactly.
<REASONING>...</REASONING> Step-by-step logic from those facts to the answer.
<CONCLUSION>...</CONCLUSION> The final answer only, as short as the question allows (for a \
multiple-choice question, the option's text).

Write as someone who worked the answer out from the image: do not mention these instructions, \
a standard answer or a hint."""

_CONDITIONED_RULE = """

You are also given the standard answer. Your CONCLUSION must state exactly that answer, in the \
same form. If your first reading of the image disagrees with it, look again: the standard answer \
is correct."""

#: Instruction for answer-conditioned generation (LLaVA-CoT's recipe): the system message.
TEACHER_INSTRUCTION = _FORMAT_RULES + _CONDITIONED_RULE
#: Instruction for blind generation: the teacher gets the question only.
BLIND_INSTRUCTION = _FORMAT_RULES


def instruction(mode: str = "conditioned") -> str:
    """The system instruction for ``mode`` ("conditioned" or "blind").

    >>> instruction("blind") in TEACHER_INSTRUCTION
    True
    """
    return TEACHER_INSTRUCTION if check_mode(mode) == "conditioned" else BLIND_INSTRUCTION


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def standard_answer(task: synth.Task) -> str:
    """The answer a teacher is conditioned on: the answer text, for multiple choice too (the
    option's text: one answer form across the base's pretraining, the direct targets, the
    CONCLUSION and scoring, which accepts the text or the letter).

    >>> t = synth.make_task(7, "bar_value", multiple_choice=True)
    >>> standard_answer(t) == t.answer == t.choices["ABCDEF".index(t.answer_letter)]
    True
    """
    return task.answer


def request_text(
    question: str, answer: str | None = None, hint: str | None = None, mode: str = "conditioned"
) -> str:
    """The user text after the image: ``"Question: …\\nStandard answer: …"`` (conditioned) or just
    the question (blind); an optional ``"\\nHint: …"`` line comes last.

    >>> request_text("How many red objects are there?", "2")
    'Question: How many red objects are there?\\nStandard answer: 2'
    >>> request_text("How many red objects are there?", mode="blind")
    'How many red objects are there?'
    """
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    if check_mode(mode) == "conditioned":
        if answer is None or not str(answer).strip():
            raise ValueError("conditioned mode needs the standard answer (or use mode='blind')")
        text = f"Question: {question}\nStandard answer: {str(answer).strip()}"
    else:
        text = question
    if hint:
        text += f"\nHint: {hint.strip()}"
    return text


@dataclass(frozen=True)
class RequestText:
    """What :func:`parse_request_text` recovers from the user text."""

    question: str
    answer: str | None
    mode: str
    hint: str | None = None


_REQUEST_RE = re.compile(
    r"^(?:Question:[ \t]*)?(?P<question>.*?)"
    r"(?:\nStandard answer:[ \t]*(?P<answer>.*?))?"
    r"(?:\nHint:[ \t]*(?P<hint>.*))?$",
    re.DOTALL,
)


def parse_request_text(text: str) -> RequestText:
    """Inverse of :func:`request_text`: question, standard answer (or None), mode and hint.

    >>> r = parse_request_text(request_text("Is it red?\\nOptions: A. yes B. no", "A", "Look."))
    >>> r.question, r.answer, r.mode, r.hint
    ('Is it red?\\nOptions: A. yes B. no', 'A', 'conditioned', 'Look.')
    """
    m = _REQUEST_RE.match(text.strip())
    assert m is not None  # every string matches (all parts are optional)
    answer = m["answer"].strip() if m["answer"] is not None else None
    hint = m["hint"].strip() if m["hint"] is not None else None
    question = m["question"].strip()
    if not question:
        raise ValueError("the request has no question text")
    return RequestText(question, answer or None, "conditioned" if answer else "blind", hint)


def build_messages(
    task_or_image: Any,
    question: str | None = None,
    *,
    answer: str | None = None,
    hint: str | None = None,
    mode: str = "conditioned",
) -> list[dict]:
    """OpenAI chat messages for one request: the system instruction, then one user message with
    the image (a base64 PNG data URL) followed by :func:`request_text`.

    ``task_or_image`` is a :class:`cotlib.synth.Task` (question and standard answer default to
    the task's; its image is encoded once, see :func:`task_data_url`) or any image
    :func:`cotlib.images.load_image` accepts, or a ``data:`` URL.

    >>> from PIL import Image
    >>> m = build_messages(Image.new("RGB", (8, 8)), "What is shown?", mode="blind")
    >>> [part["type"] for part in m[1]["content"]], m[1]["content"][1]["text"]
    (['image_url', 'text'], 'What is shown?')
    """
    check_mode(mode)
    if isinstance(task_or_image, synth.Task):
        task = task_or_image
        question = question if question is not None else task.prompt_question()
        if answer is None and mode == "conditioned":
            answer = standard_answer(task)
        url = task_data_url(task)
    else:
        if question is None:
            raise ValueError("pass the question (only a Task carries its own)")
        url = _to_data_url(task_or_image)
    text = request_text(question, answer if mode == "conditioned" else None, hint, mode)
    return [
        {"role": "system", "content": instruction(mode)},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        },
    ]


_DATA_URLS: dict[int, tuple[weakref.ref, str]] = {}  # id(image) -> (weak ref, data URL)


def task_data_url(task: synth.Task) -> str:
    """The task's image as a PNG data URL, encoded once per image: a :class:`cotlib.synth.Task`
    keeps its image, and the URL is remembered for as long as that image object lives (so a
    rerun, a retry or a second mode does not encode it again). Don't draw on a task's image
    in place after sending it; give the task a new image instead.

    >>> t = synth.make_task(3, "count_shape")
    >>> task_data_url(t) is task_data_url(t)
    True
    """
    image = task.get_image()
    key = id(image)
    entry = _DATA_URLS.get(key)
    if entry is not None and entry[0]() is image:
        return entry[1]
    url = images.image_to_data_url(image)
    # PIL images are unhashable: key by id, and drop the entry when the image is freed
    _DATA_URLS[key] = (weakref.ref(image, lambda _: _DATA_URLS.pop(key, None)), url)
    return url


def _to_data_url(image: Any) -> str:
    if isinstance(image, str) and image.startswith("data:"):
        images.data_url_to_image(image)  # validate early, with a clear ImageError
        return image
    return images.image_to_data_url(image if _is_pil(image) else images.load_image(image))


def _is_pil(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def request_parts(messages: list[dict]) -> tuple[str, str]:
    """(image URL, user text) from the last user message of an OpenAI chat request.

    Raises ValueError with a message fit for a 400 response when there is no user message,
    no image or no text.

    >>> url, text = request_parts(build_messages(synth.make_task(1, "bar_max", False)))
    >>> url[:22], text.splitlines()[0]
    ('data:image/png;base64,', 'Question: Which color bar is the tallest?')
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("no message with role 'user'")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ValueError("the user message 'content' must be a string or a list of parts")
    urls, texts = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise ValueError("each content part must be an object with a 'type'")
        if part.get("type") == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise ValueError("an image_url part has no 'url' string")
            urls.append(url)
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
    if not urls:
        raise ValueError("the last user message has no image (an image_url part is required)")
    text = "\n".join(t for t in texts if t.strip())
    if not text.strip():
        raise ValueError("the last user message has no question text")
    return urls[-1], text


def request_key(question: str, image_data_url: str) -> str:
    """A stable 16-hex-digit key for (question, image): the local teacher logs it with every
    injected fault, and results records carry it, so the two can be joined.

    >>> len(request_key("How many?", "data:image/png;base64,AAAA"))
    16
    """
    digest = hashlib.sha256(question.strip().encode("utf-8"))
    digest.update(b"\x00")
    digest.update(image_data_url.strip().encode("ascii", errors="replace"))
    return digest.hexdigest()[:16]


def messages_key(messages: list[dict]) -> str:
    """:func:`request_key` of a chat request built by :func:`build_messages`."""
    url, text = request_parts(messages)
    return request_key(parse_request_text(text).question, url)


# -----------------------------------------------------------------------------
# tasks in, requests out


@dataclass
class Job:
    task_id: str
    task: Any  # a synth.Task, or a dict with id / image / question / answer

    def messages(self, mode: str, image_root: str | Path | None) -> list[dict]:
        if isinstance(self.task, synth.Task):
            return build_messages(self.task, mode=mode)
        rec = self.task
        image = rec["image"]
        if isinstance(image, (str, Path)) and not str(image).startswith("data:"):
            image = Path(image_root) / image if image_root is not None else Path(image)
        question = rec.get("prompt") or rec["question"]
        answer = rec.get("answer") or rec.get("answer_letter")  # the text first, as standard_answer
        return build_messages(image, question, answer=answer, mode=mode)


def jobs_for(tasks: Iterable[Any], image_root: str | Path | None) -> list[Job]:
    """Accept synth.Task objects, task records (with a scene) or plain dicts
    ``{"id", "image", "question", "answer"}`` (e.g. your own data)."""
    jobs, seen = [], set()
    for task in tasks:
        if isinstance(task, Mapping) and "scene" in task:
            task = synth.Task.from_record(dict(task), image_root)
        if isinstance(task, synth.Task):
            task_id = task.id
        elif isinstance(task, Mapping) and {"id", "image", "question"} <= set(task):
            task_id = str(task["id"])
        else:
            raise TypeError(
                "tasks must be synth.Task objects or dicts with 'id', 'image' and 'question', "
                f"got {type(task).__name__}"
            )
        if task_id in seen:
            raise ValueError(f"duplicate task id {task_id!r}: ids must be unique")
        seen.add(task_id)
        jobs.append(Job(task_id, task))
    return jobs
