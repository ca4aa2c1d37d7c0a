"""The OpenAI Batch API path: write the requests file, read the downloaded output into records."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cotlib.teacher.client import TeacherConfig, chat_request, redact
from cotlib.teacher.cost import BATCH_DISCOUNT, estimate_cost
from cotlib.teacher.prompt import check_mode, jobs_for
from cotlib.teacher.replies import BadResponse, read_reply
from cotlib.teacher.run import RunSummary
from cotlib.teacher.store import ResultsWriter, compact_results, encode_line, make_record

# -----------------------------------------------------------------------------
# OpenAI Batch API


BATCH_URL = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024


def batch_request(task: Any, config: TeacherConfig, image_root: str | Path | None = None) -> dict:
    """One Batch API request line (as a dict) for ``task``.

    >>> from cotlib import synth
    >>> task = synth.make_task(0, "count_color")
    >>> line = batch_request(task, TeacherConfig(model="gpt-4o"))
    >>> line["custom_id"] == task.id, line["url"], line["body"]["model"]
    (True, '/v1/chat/completions', 'gpt-4o')
    """
    (job,) = jobs_for([task], image_root)
    body = chat_request(job.messages(config.mode, image_root), config)
    return {"custom_id": job.task_id, "method": "POST", "url": BATCH_URL, "body": body}


def write_batch_file(
    tasks: Iterable[Any],
    path: str | Path,
    config: TeacherConfig | None = None,
    *,
    image_root: str | Path | None = None,
) -> int:
    """Write an OpenAI Batch API input file: one ``{"custom_id": task id, "method": "POST",
    "url": "/v1/chat/completions", "body": {...}}`` per line. Returns the number of requests.

    Raises ValueError beyond the Batch API limits (50,000 requests, 200 MB): split the tasks.
    See the module docstring for uploading it and :func:`read_batch_output` for the result.
    """
    config = config or TeacherConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = size = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for task in tasks:
            line = encode_line(batch_request(task, config, image_root))
            n += 1
            size += len(line)
            if n > BATCH_MAX_REQUESTS or size > BATCH_MAX_BYTES:
                f.close()
                tmp.unlink()
                raise ValueError("a batch file holds at most 50,000 requests and 200 MB: "
                                 "split the tasks into several batches")
            f.write(line)
    os.replace(tmp, path)
    return n


def read_batch_output(
    path: str | Path,
    out_path: str | Path,
    *,
    mode: str = "conditioned",
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> RunSummary:
    """Convert a downloaded Batch API output file into results records appended to ``out_path``
    (then compacted: one line per task). Cost uses the batch discount.

    Each output line is ``{"id", "custom_id", "response": {"status_code", "request_id",
    "body": <chat.completion>} | null, "error": {"code", "message"} | null}``. A non-200
    status or an ``error`` becomes a ``"failed"`` record with the reason, which a live
    :func:`run_generation` over the same file retries.
    """
    check_mode(mode)
    started = time.perf_counter()
    summary = RunSummary(out_path=str(out_path))
    failures: Counter[str] = Counter()
    with ResultsWriter(out_path, fsync_interval_s=1.0) as writer, open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            summary.total += 1
            summary.attempts += 1
            task_id = str(item["custom_id"])
            response = item.get("response") or {}
            body = response.get("body") or {}
            model = body.get("model") or "unknown"
            status = response.get("status_code")
            error = item.get("error") or (body.get("error") if status != 200 else None)
            if error or status != 200:
                err = error or {}
                reason = "batch_error" if item.get("error") else _http_reason(status)
                message = err.get("message") or f"status {status}"
                failure = f"{reason}: {err.get('code') or status}: {redact(message)}"[:500]
                writer.write(make_record(task_id, model=model, mode=mode, status="failed",
                                         failure=failure))
                summary.failed += 1
                failures[reason] += 1
                continue
            try:
                reply = read_reply(body)
            except BadResponse as bad:
                reason = f"bad_response:{bad.kind}"
                writer.write(make_record(task_id, model=model, mode=mode, status="failed",
                                         failure=f"{reason}: {redact(bad)}"[:500]))
                summary.failed += 1
                failures[reason] += 1
                continue
            usage = {"prompt_tokens": reply.prompt_tokens,
                     "completion_tokens": reply.completion_tokens}
            cost = estimate_cost(usage, model, prices) * BATCH_DISCOUNT
            record = make_record(task_id, reply.text, model=model, mode=mode, usage=usage,
                                 cost_usd=cost, finish_reason=reply.finish_reason)
            writer.write(record)
            summary.done += 1
            summary.prompt_tokens += record["usage"]["prompt_tokens"]
            summary.completion_tokens += record["usage"]["completion_tokens"]
            summary.cost_usd += cost
        writer.sync()
        compact_results(out_path)
    summary.failures = dict(failures.most_common())
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _http_reason(status: Any) -> str:
    names = {400: "bad_request", 401: "auth", 429: "rate_limit"}
    if isinstance(status, int) and status >= 500:
        return "server_error"
    return names.get(status, f"http_{status}")
