"""The results file: one JSON line per trace, written crash-safe under a lock, read back by one
reader."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cotlib import stages
from cotlib.teacher.cost import usage_tokens

log = logging.getLogger(__name__)


def make_record(
    task_id: str,
    text: str = "",
    *,
    model: str,
    mode: str,
    status: str = "done",
    usage: Any = None,
    cost_usd: float = 0.0,
    attempts: int = 1,
    failure: str | None = None,
    seconds: float = 0.0,
    request_key: str | None = None,
    finish_reason: str | None = None,
) -> dict:
    """One results line. ``stages``/``problems``/``final_answer`` come from :mod:`cotlib.stages`.

    >>> r = make_record("t1", stages.render("s", "c", "r", "4"), model="m", mode="blind")
    >>> r["final_answer"], r["problems"], r["status"]
    ('4', [], 'done')
    """
    parsed = stages.parse(text)
    tokens_in, tokens_out = usage_tokens(usage)
    return {
        "task_id": task_id,
        "status": status,
        "model": model,
        "mode": mode,
        "text": text,
        "stages": parsed.stages if text else {},
        "problems": [p.kind for p in parsed.problems] if text else [],
        "final_answer": stages.final_answer(text) if text else "",
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out},
        "cost_usd": round(cost_usd, 8),
        "attempts": attempts,
        "failure": failure,
        "seconds": round(seconds, 3),
        "created": int(time.time()),
        "request_key": request_key,
        "finish_reason": finish_reason,
    }


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


def load_results(path: str | Path) -> dict[str, dict]:
    """``{task_id: record}`` from a results file, keeping the LAST record of each task (a retried
    task's new record supersedes the old one). A torn final line (no newline, e.g. after a crash)
    and unreadable lines are ignored.

    >>> load_results("no/such/file.jsonl")
    {}
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(lines[-1]))
    records: dict[str, dict] = {}
    bad = 0
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["task_id"])] = record
        except (ValueError, KeyError, TypeError):
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable lines", path, bad)
    return records


def compact_results(path: str | Path) -> int:
    """Rewrite the file with exactly one line per task (the last record of each), atomically:
    a temporary file in the same folder, fsync, ``os.replace``. Returns the number of lines.
    """
    path = Path(path)
    records = load_results(path)
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

    def write(self, record: dict) -> None:
        data = encode_line(record)
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
