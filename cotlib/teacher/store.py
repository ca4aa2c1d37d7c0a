"""The results file: one JSON line per trace, written crash-safe under a lock, read back by one
reader."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cotlib import stages
from cotlib.teacher.cost import usage_tokens

log = logging.getLogger(__name__)


# -----------------------------------------------------------------------------
# the trace record: one line of traces.jsonl


class TraceError(ValueError):
    """A line that cannot be read as a :class:`Trace`; ``reason`` names why (the filter reports
    it): ``record:not_an_object`` or ``text:not_a_string``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def trace_problem(row: Any) -> tuple[str, str] | None:
    """``(reason, explanation)`` when ``row`` (one parsed JSON line) cannot be a :class:`Trace`,
    else None: ``record:not_an_object`` (``null``, a list, a string...) or ``text:not_a_string``
    (e.g. a number stored as the trace).

    >>> trace_problem(None)[0], trace_problem({"text": 5})[0], trace_problem({"text": "x"})
    ('record:not_an_object', 'text:not_a_string', None)
    """
    if not isinstance(row, Mapping):
        return "record:not_an_object", (f"a JSON {type(row).__name__} where a record object "
                                        f"was expected: {_excerpt(repr(row), 60)}")
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        return "text:not_a_string", f"'text' is a {type(text).__name__}: {_excerpt(repr(text), 40)}"
    return None


def _excerpt(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Keys a results line has that are derived from ``text`` when it is written. The library reads
#: the text (:attr:`Trace.parsed`, :func:`parse_text`), never these; they stay in the file for a
#: person or a notebook reading it (notebook 02 tabulates ``problems`` and ``final_answer``) and
#: so that every line written so far keeps its bytes.
DERIVED_KEYS = ("stages", "problems", "final_answer")


@functools.lru_cache(maxsize=8192)
def parse_text(text: str) -> stages.Parsed:
    """:func:`cotlib.stages.parse` of a trace's text, cached by text, so that in one process a
    text is parsed once for its results line, every filter check, the filter report and the
    dataset row (the cache holds the last 8,192 texts). Shared: treat the result as read-only.

    >>> a, b = stages.render("s", "c", "r", "4"), stages.render("s", "c", "r", "4")
    >>> parse_text(a) is parse_text(b), parse_text(a).ok
    (True, True)
    """
    return stages.parse(text)


@dataclass
class Trace:
    """One line of ``traces.jsonl``: the teacher's trace for one task, or why there is none.

    The line's JSON (:meth:`to_json`, the file format every run and the shipped data use) holds
    these fields in this order, with ``stages``, ``problems`` (kinds) and ``final_answer`` derived
    from ``text`` after ``text``; keys this type does not know (``task_type`` of imported data...)
    are kept in ``extra`` and written back after the rest.

    >>> t = Trace("t1", stages.render("s", "c", "r", "4"), model="m", mode="blind")
    >>> row = t.to_json(); row["final_answer"], row["problems"], Trace.from_json(row) == t
    ('4', [], True)
    """

    task_id: str
    text: str = ""
    status: str = "done"  # or "failed"
    model: str = ""
    mode: str = ""
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    cost_usd: float = 0.0
    attempts: int = 1
    failure: str | None = None  # "<reason>[ after N attempts]: <detail>" when failed
    seconds: float = 0.0
    created: int | None = None  # Unix time the line was made
    request_key: str | None = None  # joins the local teacher's fault log (request_key)
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def parsed(self) -> stages.Parsed:
        """The text's stages and problems (:func:`parse_text`: each text parsed once).

        >>> Trace("t1", "<SUMMARY> s </SUMMARY>").parsed.missing
        ['CAPTION', 'REASONING', 'CONCLUSION']
        """
        return parse_text(self.text or "")

    @property
    def final_answer(self) -> str:
        """The answer the text gives (:func:`cotlib.stages.final_answer`), "" without a text."""
        return stages.final_answer(self.text) if self.text else ""

    def to_json(self) -> dict:
        """The results line as a dict (the file format)."""
        parsed = self.parsed if self.text else None
        row = {
            "task_id": self.task_id,
            "status": self.status,
            "model": self.model,
            "mode": self.mode,
            "text": self.text,
            "stages": dict(parsed.stages) if parsed else {},
            "problems": [p.kind for p in parsed.problems] if parsed else [],
            "final_answer": self.final_answer,
            "usage": self.usage,
            "cost_usd": self.cost_usd,
            "attempts": self.attempts,
            "failure": self.failure,
            "seconds": self.seconds,
            "created": self.created,
            "request_key": self.request_key,
            "finish_reason": self.finish_reason,
        }
        return {**row, **{k: v for k, v in self.extra.items() if k not in row}}

    @classmethod
    def from_json(cls, row: Any) -> Trace:
        """The :class:`Trace` of one parsed line (old files too: missing fields take their
        defaults); :class:`TraceError` for a line that is not one (:func:`trace_problem`)."""
        problem = trace_problem(row)
        if problem is not None:
            raise TraceError(*problem)
        names = [f.name for f in fields(cls) if f.name != "extra"]
        known = {k: row[k] for k in names if row.get(k) is not None}
        extra = {k: v for k, v in row.items() if k not in names and k not in DERIVED_KEYS}
        return cls(**{**known, "task_id": str(row.get("task_id", ""))}, extra=extra)


    @classmethod
    def new(cls, task_id: str, text: str = "", *, model: str, mode: str, status: str = "done",
            usage: Any = None, cost_usd: float = 0.0, attempts: int = 1,
            failure: str | None = None, seconds: float = 0.0, request_key: str | None = None,
            finish_reason: str | None = None, extra: Mapping[str, Any] | None = None) -> Trace:
        """A trace made now: ``usage`` from a dict or the openai ``CompletionUsage``, cost and
        seconds rounded, ``created`` the current time."""
        tokens_in, tokens_out = usage_tokens(usage)
        return cls(task_id, text, status, model, mode,
                   {"prompt_tokens": tokens_in, "completion_tokens": tokens_out},
                   round(cost_usd, 8), attempts, failure, round(seconds, 3), int(time.time()),
                   request_key, finish_reason, dict(extra or {}))


def make_record(task_id: str, text: str = "", **kwargs: Any) -> dict:
    """One results line made now: :meth:`Trace.new` (same arguments) as the line's dict.
    ``stages``/``problems``/``final_answer`` come from :mod:`cotlib.stages`.

    >>> r = make_record("t1", stages.render("s", "c", "r", "4"), model="m", mode="blind")
    >>> r["final_answer"], r["problems"], r["status"]
    ('4', [], 'done')
    """
    return Trace.new(task_id, text, **kwargs).to_json()


# -----------------------------------------------------------------------------
# the one reader


#: The key :func:`read_records` gives a line it could not parse as JSON.
UNREADABLE = "_cotlib_unreadable"


@dataclass(frozen=True)
class Line:
    """One non-blank line of a results file as read: ``value`` is its JSON (any type: the
    readers decide what they accept), or None with ``error`` when it is not JSON (or not UTF-8);
    ``torn`` marks a last line without its newline (a write cut short by a crash)."""

    number: int
    value: Any
    error: str | None = None
    torn: bool = False


def read_lines(path: str | Path) -> list[Line]:
    """Every non-blank line of a JSONL results file, parsed, in order (line numbers count from 1,
    blank lines included). THE reader: :func:`latest_records` and
    :func:`cotlib.filtering.read_traces` are views of it.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> _ = p.write_text('{"task_id": "a"}\\n\\nnull\\n{oops\\n{"task_id": "b"}')
    >>> for line in read_lines(p):
    ...     print(line.number, line.value, line.error is not None, line.torn)
    1 {'task_id': 'a'} False False
    3 None False False
    4 None True False
    5 {'task_id': 'b'} False True
    """
    pieces = Path(path).read_bytes().split(b"\n")
    lines = []
    for number, raw in enumerate(pieces, 1):
        if not raw.strip():
            continue
        torn = number == len(pieces)  # text after the last newline
        try:
            lines.append(Line(number, json.loads(raw.decode("utf-8")), None, torn))
        except ValueError as err:  # not JSON, or not UTF-8 (UnicodeDecodeError)
            lines.append(Line(number, None, f"line {number}: {err}", torn))
    return lines


def read_records(path: str | Path) -> list[Any]:
    """Every line of a results file, in order -- repeats of a task too, and a torn last line
    when it parses -- as its JSON value; a line that is not JSON becomes
    ``{"task_id": "line N", UNREADABLE: "<why>"}``. The filter's view
    (:func:`cotlib.filtering.read_traces`): it names every line it cannot use.
    """
    return [line.value if line.error is None
            else {"task_id": f"line {line.number}", UNREADABLE: line.error}
            for line in read_lines(path)]


def latest_records(path: str | Path) -> dict[str, dict]:
    """``{task_id: record}`` from a results file, keeping the LAST record of each task (a retried
    task's new record supersedes the old one). A torn final line (no newline, e.g. after a crash)
    and unreadable lines are ignored. The resume view of :func:`read_lines`.

    >>> latest_records("no/such/file.jsonl")
    {}
    """
    path = Path(path)
    if not path.exists():
        return {}
    records: dict[str, dict] = {}
    bad = 0
    for line in read_lines(path):
        if line.torn:
            log.warning("%s: ignoring a torn last line (line %d)", path, line.number)
        elif isinstance(line.value, Mapping) and "task_id" in line.value:
            records[str(line.value["task_id"])] = line.value
        else:
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable lines", path, bad)
    return records


# -----------------------------------------------------------------------------
# crash-safe JSONL results


def repair_results(path: str | Path) -> int:
    """Cut a torn last line (no trailing newline: a write interrupted by a crash) off the file.
    Returns the number of bytes removed.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> _ = p.write_text('{"task_id": "a"}\\n{"task_id": "b", "te')
    >>> repair_results(p), p.read_text()
    (20, '{"task_id": "a"}\\n')
    """
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        end = size
        while end > 0:  # scan backwards for the last newline, 64 KiB at a time
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            if start + len(block) == size and block.endswith(b"\n"):
                return 0
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: removed a torn last line (%d bytes)", path, size - keep)
    return size - keep


def compact_results(path: str | Path) -> int:
    """Rewrite the file with exactly one line per task (the last record of each), atomically:
    a temporary file in the same folder, fsync, ``os.replace``. Returns the number of lines.
    """
    path = Path(path)
    records = latest_records(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        for record in records.values():
            f.write(encode_line(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(records)


def encode_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultsWriter:
    """Append-only JSONL writer, safe against crashes.

    Each record is encoded first and written with ONE ``os.write`` on a file opened with
    ``O_APPEND``, so a killed process leaves whole lines plus at most one torn last line, which
    :func:`repair_results` cuts off when the file is opened again. Once ``os.write`` returns, the
    line survives the process being killed (the kernel holds it). ``fsync`` -- needed only to
    survive a power cut or OS crash -- costs milliseconds, so it runs at most every
    ``fsync_interval_s`` seconds (0 = after every line) and on close: a power cut loses at most
    that last interval of lines, which a rerun regenerates. An exclusive ``flock`` stops two runs
    from writing the same file.
    """

    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_interval_s = fsync_interval_s
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(self._fd, self.path)
            repair_results(self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self._last_sync = time.monotonic()
        self._dirty = False

    def write(self, record: dict | Trace) -> None:
        data = encode_line(record.to_json() if isinstance(record, Trace) else record)
        view = memoryview(data)
        while view:  # a regular file takes it all in one call; loop only for robustness
            n = os.write(self._fd, view)
            view = view[n:]
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)  # also releases the lock
                self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"{path} is being written by another generation run") from None
