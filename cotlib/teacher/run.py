"""A generation run: bounded concurrency, retries, a budget ceiling, fail-fast, and resumable
output; :func:`generate_traces` (async) and :func:`run_generation` (sync, works in Jupyter)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotlib.teacher.client import (
    TeacherConfig,
    TeacherError,
    chat_request,
    effective_base_url,
    key_for,
    openai_client,
    redact,
)
from cotlib.teacher.cost import price_for, worst_case_cost
from cotlib.teacher.prompt import Job, jobs_for, messages_key
from cotlib.teacher.replies import (
    BadResponse,
    Reply,
    TeacherTimeout,
    backoff_s,
    classify_error,
    field_of,
    read_reply,
    read_usage,
    retry_after_s,
)
from cotlib.teacher.store import ResultsWriter, Trace, compact_results, latest_records

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one :func:`generate_traces` run did. ``done + failed + skipped + not_started`` equals
    the number of tasks given; tokens and cost count this run only."""

    out_path: str = ""
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already "done" in the file before this run
    not_started: int = 0  # left for a later run (budget reached or stopped)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    seconds: float = 0.0
    stopped_by_budget: bool = False
    budget_note: str = ""  # why the next request did not fit under the cap

    def __str__(self) -> str:
        text = (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped, "
            f"{self.not_started} not started of {self.total} tasks in {self.seconds:.1f} s; "
            f"{self.prompt_tokens + self.completion_tokens:,} tokens, ${self.cost_usd:.4f}"
        )
        if self.failures:
            text += "; failures: " + ", ".join(f"{k} {v}" for k, v in self.failures.items())
        if self.stopped_by_budget:
            text += ("; stopped by the budget cap (rerun with a bigger budget_usd, or a smaller "
                     "max_tokens, to continue)")
            if self.budget_note:
                text += f": {self.budget_note}"
        return text


# -----------------------------------------------------------------------------
# generation


def connection_limits(concurrency: int) -> Any:
    """openai's default HTTP connection limits, with room to keep ``concurrency`` connections
    alive. The default keeps 100: at 256 requests in flight (a vLLM server) it would close the
    surplus after every burst of answers and reconnect for the next requests.

    >>> connection_limits(256).max_keepalive_connections, connection_limits(8).max_connections
    (256, 1000)
    """
    import openai

    default = openai.DEFAULT_CONNECTION_LIMITS  # an httpx Limits object
    return type(default)(
        max_connections=max(default.max_connections or 0, concurrency),
        max_keepalive_connections=max(default.max_keepalive_connections or 0, concurrency),
        keepalive_expiry=default.keepalive_expiry,
    )


async def _with_deadline(make_call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """Await ``make_call()`` with a whole-request time limit. ``asyncio.timeout`` (3.11+) runs
    in the same task; ``wait_for`` (3.10) adds a task per request."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await make_call()
    return await asyncio.wait_for(make_call(), seconds)


class RunState:
    """What the requests of one run share: the budget (a ceiling: each attempt reserves its
    worst-case cost before it is sent; the difference is released when the usage comes back)
    and the fail-fast counter (connection failures and timeouts in a row, nothing succeeding).

    >>> async def demo():
    ...     s = RunState(budget_usd=1.0, url="http://x/v1", fail_fast_after=3)
    ...     ok = await s.reserve(0.6); s.settle(0.6, 0.2)   # reserved 0.6, it cost 0.2
    ...     ok2 = await s.reserve(0.7); s.settle(0.7, 0.7)  # 0.2 + 0.7 fits under 1.0
    ...     return ok, ok2, await s.reserve(0.2), round(s.spent, 6), s.exhausted
    >>> asyncio.run(demo())  # 0.9 + 0.2 could cross the cap: not sent
    (True, True, False, 0.9, True)
    """

    def __init__(self, budget_usd: float | None = None, spent: float = 0.0, *, url: str = "",
                 fail_fast_after: int = 5, model: str = "") -> None:
        self.budget_usd, self.spent, self.url, self.model = budget_usd, spent, url, model
        self.fail_fast_after = fail_fast_after
        self.reserved = 0.0
        self.open_reservations = 0
        self.exhausted = False  # a request could not be reserved: stop launching
        self.budget_note = ""
        self.in_a_row = 0  # connection failures / timeouts since the last answer
        self.streak: Counter[str] = Counter()
        self.answered = False
        self.abort_message: str | None = None
        self.models: list[str] | None = None  # what the server listed, if it did
        self.on_abort: Callable[[], None] | None = None
        #: ``GET /models`` within ``connect_check_s``: True when the server answered
        self.probe: Callable[[], Awaitable[bool]] | None = None
        self._probing = False
        self._changed: asyncio.Condition | None = None

    async def reserve(self, amount: float) -> bool:
        """Reserve ``amount`` USD for one attempt; wait while requests in flight may free some;
        False (and :attr:`exhausted`) when it cannot fit under the cap."""
        if self.budget_usd is None:
            return True
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                if self.exhausted or self.abort_message:
                    return False
                if self.spent + self.reserved + amount <= self.budget_usd:
                    self.reserved += amount
                    self.open_reservations += 1
                    return True
                if self.open_reservations == 0:  # nothing in flight will free anything
                    self.exhausted = True
                    self._changed.notify_all()
                    return False
                await self._changed.wait()

    def settle(self, reserved: float, actual: float) -> None:
        """An attempt is over: release its reservation, count what it cost."""
        self.spent += actual
        if self.budget_usd is None:
            return
        self.reserved = max(0.0, self.reserved - reserved)
        self.open_reservations -= 1
        if self.open_reservations == 0:
            self.reserved = 0.0  # no float drift
        if self._changed is not None:
            changed = self._changed

            async def notify() -> None:
                async with changed:
                    changed.notify_all()

            asyncio.get_running_loop().create_task(notify())

    def answered_once(self) -> None:
        self.answered = True
        self.in_a_row = 0
        self.streak.clear()

    def failed_to_reach(self, reason: str) -> None:
        """Count a connection failure or timeout; abort the run after ``fail_fast_after`` in a
        row with nothing answering in between."""
        self.in_a_row += 1
        self.streak[reason] += 1
        if self.in_a_row >= self.fail_fast_after and self.abort_message is None:
            what = ", ".join(f"{n} {r}" for r, n in self.streak.most_common())
            self.abort(unreachable_message(self.url, f"{self.in_a_row} requests in a row failed "
                                           f"({what}) and none was answered"))

    async def after_timeout(self, url: str, timeout_s: float) -> None:
        """A request timed out: ask the server a cheap question at once. If that goes
        unanswered too, the server is hung or gone: stop now (within ``connect_check_s`` of the
        first timeout) instead of waiting out ``fail_fast_after`` full timeouts."""
        if self.probe is None or self._probing or self.abort_message is not None:
            return
        self._probing = True
        try:
            if not await self.probe():
                self.in_a_row += 1
                self.streak["timeout"] += 1
                self.abort(unreachable_message(
                    url, f"a request got no answer within the {timeout_s:g} s timeout and "
                    f"GET {url}/models got none either"))
        finally:
            self._probing = False

    def abort(self, message: str) -> None:
        self.abort_message = message
        if self.on_abort is not None:
            self.on_abort()


def unreachable_message(url: str, what: str) -> str:
    """The one message a run stops with when the teacher cannot be reached."""
    return (f"stopped: cannot reach the teacher at {url}: {what}. Check that the server is "
            f"running and answering (e.g. `curl {url}/models`), that base_url has the right "
            "host, port and /v1 path, and that no firewall or proxy is in the way; a slow "
            "server needs a bigger timeout_s (--timeout). Finished tasks are kept: rerun to "
            "continue.")


def describe_failure(err: BaseException, url: str, config: TeacherConfig) -> str:
    """A failure's detail for the record: timeouts name the time limit and the URL, connection
    errors the URL and the cause."""
    import openai

    if isinstance(err, TeacherTimeout):
        return str(err)
    if isinstance(err, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return _timeout_text(url, config.timeout_s)
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        return f"cannot connect to {url} ({why})"
    if isinstance(err, BadResponse):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _timeout_text(url: str, seconds: float) -> str:
    return (f"no answer from {url} within the {seconds:g} s timeout (timeout_s / --timeout; "
            "raise it for a slow server)")


async def call_with_retries(
    client: Any,
    request: dict,
    config: TeacherConfig,
    rng: random.Random,
    state: RunState | None = None,
    worst_case_usd: float = 0.0,
) -> tuple[Reply | None, int, tuple[str, BaseException] | None, float]:
    """One chat completion with the run's retries: ``(reply, attempts, None, cost)`` or
    ``(None, attempts, (reason, error), cost)``. Each attempt first reserves ``worst_case_usd``
    in ``state``'s budget; none is sent when it does not fit (reason ``budget``). A malformed 200
    (:class:`BadResponse`) is retried like a 500. ``cost`` sums what every attempt cost. The
    policy (:func:`classify_error`, :func:`backoff_s`, :func:`retry_after_s`) is the one the
    filter's judge uses too (:func:`complete_with_retries`).

    Why this loop and not the ``openai`` SDK's retries (the client's are off, ``max_retries=0``).
    Measured with openai 3.57 against two small local servers, 1 s timeout, 4 retries:

    - the SDK retries by HTTP status and transport error only. A 200 whose body is not a
      completion (a proxy's HTML page) is a success to it: 1 request sent, ``create()``
      returned a ``str``. The teacher-robustness issue needs it retried like a 500; this loop
      sent 5 requests and recorded ``bad_response:not_a_completion``. A run needs its own loop
      for those anyway, and one loop for every failure keeps one attempt count, one backoff and
      one budget reservation per attempt;
    - the SDK's retries hide the first timeout: against a server that accepts and never
      answers, its first error came after 11.6 s (5 attempts of 1 s plus backoff; about 5 min
      per task at the default 60 s). Fail-fast must see that first timeout to probe the server
      at once (``RunState.after_timeout``; tests/test_faults.py stops within 10 s).
    """
    import openai

    state = state or RunState(url=effective_base_url(config.base_url),
                              fail_fast_after=config.fail_fast_after)
    url = state.url or effective_base_url(config.base_url)
    price = price_for(config.model, config.prices)
    attempts, cost = 0, 0.0
    while True:
        if state.abort_message is not None:
            return None, attempts, ("aborted", RuntimeError(state.abort_message)), cost
        if not await state.reserve(worst_case_usd):
            why = state.abort_message or (
                f"the next request could cost up to ${worst_case_usd:.6f} (prompt + max_tokens "
                f"at the model's price) and ${state.spent:.6f} of budget_usd=${state.budget_usd:g}"
                " is spent")
            if state.abort_message is None:
                state.budget_note = state.budget_note or why
            return None, attempts, ("budget", RuntimeError(why)), cost
        attempts += 1
        spent, settled = 0.0, False
        try:
            call = functools.partial(client.chat.completions.create, **request)
            try:
                response = await _with_deadline(call, config.timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                raise TeacherTimeout(_timeout_text(url, config.timeout_s)) from None
            state.answered_once()
            try:
                reply = read_reply(response, config.max_tokens)
            except BadResponse as bad:
                if bad.kind == "usage":  # not believed: count the most it could have cost
                    bad.cost_usd = worst_case_usd
                else:
                    try:
                        usage = read_usage(field_of(response, "usage"), config.max_tokens)
                    except BadResponse:
                        usage = None
                    bad.cost_usd = _cost(usage, price)
                spent = bad.cost_usd
                raise
            spent = _cost((reply.prompt_tokens, reply.completion_tokens), price)
            if not reply.has_usage and price is not None:
                spent = worst_case_usd  # no usage reported: count the ceiling
            state.settle(worst_case_usd, spent)
            settled = True
            return reply, attempts, None, cost + spent
        except Exception as err:
            state.settle(worst_case_usd, spent)
            settled = True
            cost += spent
            reason, retryable = classify_error(err)
            if reason in ("connection", "timeout"):
                state.failed_to_reach(reason)
                if reason == "timeout":
                    await state.after_timeout(url, config.timeout_s)
            elif isinstance(err, openai.APIStatusError):
                state.answered_once()  # the server is there, whatever it said
            if state.abort_message is not None or not retryable or attempts > config.max_retries:
                return None, attempts, (reason, err), cost
            delay = backoff_s(attempts, config, rng, retry_after_s(err))
            log.debug("%s (attempt %d): retrying in %.2f s", reason, attempts, delay)
        finally:
            if not settled:  # cancelled mid-attempt: free the reservation for the others
                state.settle(worst_case_usd, worst_case_usd)
        await asyncio.sleep(delay)


def _cost(usage: tuple[int, int] | None, price: tuple[float, float] | None) -> float:
    if usage is None or price is None:
        return 0.0
    return (usage[0] * price[0] + usage[1] * price[1]) / 1e6


async def _preflight(client: Any, state: RunState, config: TeacherConfig) -> None:
    """Before a run: can the server be reached at all (``GET /models``, ``connect_check_s``)?
    Raises :class:`TeacherError` when it cannot; remembers the models it lists. Any HTTP answer
    (even 401 or 404) counts as reachable: the requests themselves say what is wrong."""
    import openai

    limit = min(config.connect_check_s, config.timeout_s)
    try:
        page = await _with_deadline(
            lambda: client.with_options(timeout=limit, max_retries=0).models.list(), limit)
        state.models = [m.id for m in getattr(page, "data", None) or [] if hasattr(m, "id")]
    except (TimeoutError, asyncio.TimeoutError, openai.APITimeoutError):
        raise TeacherError(unreachable_message(
            state.url, f"GET {state.url}/models got no answer within {limit:g} s")) from None
    except openai.APIConnectionError as err:
        raise TeacherError(unreachable_message(
            state.url, describe_failure(err, state.url, config))) from None
    except Exception:  # an HTTP error or an odd body: the server is there
        state.models = None


def _model_missing_message(state: RunState, config: TeacherConfig) -> str:
    if state.models:
        served = ", ".join(repr(m) for m in sorted(state.models)[:20])
        more = f" (and {len(state.models) - 20} more)" if len(state.models) > 20 else ""
        listing = f"it serves {served}{more}"
    else:
        listing = f"it did not list its models (GET {state.url}/models)"
    return (f"stopped: the teacher at {state.url} has no model {config.model!r}; {listing}. "
            "Set TeacherConfig(model=...) or --model to one of them.")


async def generate_traces(
    tasks: Iterable[Any],
    out_path: str | Path,
    config: TeacherConfig | None = None,
    *,
    image_root: str | Path | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Ask the teacher for a trace per task and append one JSON line per task to ``out_path``.

    Resumable: tasks with a ``"done"`` record in ``out_path`` are skipped; ``"failed"`` ones are
    tried again and their new record supersedes the old. At most ``config.concurrency`` requests
    are in flight. 429s, 5xx, timeouts, connection errors and malformed 200 responses
    (``bad_response:<kind>``, see :func:`read_reply`) are retried up to ``config.max_retries``
    times with exponential backoff and full jitter (a ``Retry-After`` is honoured); other errors
    fail the task at once with a reason. Every failed task is written with its reason and tried
    again by the next run.

    ``budget_usd`` is a ceiling on the cost recorded in the file: each attempt reserves its
    worst-case cost (:func:`worst_case_cost`: prompt bound + ``max_tokens`` at the model's price)
    before it is sent, and the difference is released when the usage comes back; a request that
    could cross the cap is never sent, and the tasks left are ``not_started`` (rerun with a
    bigger budget). Setting ``stop`` (a ``threading.Event``) stops launching the same way. At
    the end the file is compacted to exactly one line per task.

    Fail-fast: the server is checked first (``GET /models`` within ``connect_check_s``), and
    ``fail_fast_after`` connection failures or timeouts in a row with nothing answered stop the
    run; so does a 404 ``model_not_found`` (the message lists the models the server has). Both
    raise :class:`TeacherError` with one message naming the URL and what to check, after
    writing what finished (``err.summary`` holds the run's summary).

    Records: one :class:`~cotlib.teacher.store.Trace` per line (``task_id, status
    ("done"|"failed"), model, mode, text, stages, problems (kinds), final_answer, usage, cost_usd,
    attempts, failure, seconds, created, request_key, finish_reason``). ``tasks`` are
    :class:`cotlib.synth.Task` objects, task records, or dicts ``{"id", "image", "question",
    "answer"}`` (image paths relative to ``image_root``).
    """
    import openai
    from tqdm.auto import tqdm

    config = config or TeacherConfig()
    started = time.perf_counter()
    jobs = jobs_for(tasks, image_root)
    if config.budget_usd is not None and price_for(config.model, config.prices) is None:
        raise ValueError(
            f"budget_usd is set but model {config.model!r} has no price: "
            f"pass prices={{{config.model!r}: (usd_per_1M_in, usd_per_1M_out)}}"
        )
    if config.budget_usd is not None and config.max_tokens is None:
        raise ValueError("budget_usd needs max_tokens: without it a request's cost has no "
                         "ceiling (set TeacherConfig(max_tokens=...))")
    key = key_for(config)
    url = effective_base_url(config.base_url)
    summary = RunSummary(out_path=str(out_path), total=len(jobs))
    failures: Counter[str] = Counter()
    rng = random.Random()

    with ResultsWriter(out_path, config.fsync_interval_s) as writer:
        existing = latest_records(out_path)
        spent_before = sum(float(r.get("cost_usd") or 0.0) for r in existing.values())
        pending = [j for j in jobs if existing.get(j.task_id, {}).get("status") != "done"]
        summary.skipped = len(jobs) - len(pending)
        state = RunState(config.budget_usd, spent_before, url=url, model=config.model,
                         fail_fast_after=config.fail_fast_after)
        client = openai_client(
            config, key=key, async_client=True, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=connection_limits(config.concurrency)),
        )
        bar = tqdm(total=len(pending), desc="teacher", unit="task", disable=not progress)
        in_flight: set[asyncio.Task] = set()

        def cancel_others() -> None:
            me = asyncio.current_task()
            for task in list(in_flight):
                if task is not me:
                    task.cancel()

        state.on_abort = cancel_others

        async def probe() -> bool:
            limit = min(config.connect_check_s, config.timeout_s)
            try:
                await _with_deadline(lambda: client.with_options(
                    timeout=limit, max_retries=0).models.list(), limit)
            except (TimeoutError, asyncio.TimeoutError, openai.APIConnectionError):
                return False
            except Exception:  # any HTTP answer: the server is there
                return True
            return True

        state.probe = probe

        def finish(trace: Trace, reason: str | None) -> None:
            writer.write(trace)
            summary.attempts += trace.attempts
            summary.cost_usd += trace.cost_usd
            if reason is None:
                summary.done += 1
                summary.prompt_tokens += trace.usage["prompt_tokens"]
                summary.completion_tokens += trace.usage["completion_tokens"]
            else:
                summary.failed += 1
                failures[reason] += 1
            bar.update(1)
            bar.set_postfix(done=summary.done, failed=summary.failed,
                            cost=f"${summary.cost_usd:.4f}", refresh=False)

        async def run_one(job: Job) -> None:
            t0 = time.perf_counter()
            common = {"model": config.model, "mode": config.mode}
            try:  # loading and PNG-encoding an image can take a while: keep it off the loop
                messages = await asyncio.to_thread(job.messages, config.mode, image_root)
            except Exception as err:  # an unreadable image fails this task only
                reason, _ = classify_error(err)
                return finish(Trace.new(
                    job.task_id, status="failed", attempts=0, **common,
                    failure=f"{reason}: {redact(err, key)}"[:500],
                    seconds=time.perf_counter() - t0), reason)
            rkey = messages_key(messages)
            worst = worst_case_cost(messages, config) if config.budget_usd is not None else 0.0
            reply, attempts, error, cost = await call_with_retries(
                client, chat_request(messages, config), config, rng, state, worst)
            seconds = time.perf_counter() - t0
            if error is not None:
                reason, err = error
                if reason in ("budget", "aborted") and cost == 0.0 and attempts == 0:
                    return None  # never sent: left for a rerun (not_started)
                if reason == "not_found" and (getattr(err, "code", None) == "model_not_found"
                                              or "model" in str(err).lower()):
                    state.abort(_model_missing_message(state, config))
                detail = redact(describe_failure(err, url, config), key)
                note = f" after {attempts} attempts" if attempts > 1 else ""
                return finish(Trace.new(
                    job.task_id, status="failed", attempts=attempts, seconds=seconds,
                    cost_usd=cost, failure=f"{reason}{note}: {detail}"[:500], request_key=rkey,
                    **common), reason)
            finish(Trace.new(
                job.task_id, reply.text, model=reply.model or config.model, mode=config.mode,
                usage={"prompt_tokens": reply.prompt_tokens,
                       "completion_tokens": reply.completion_tokens},
                cost_usd=cost, attempts=attempts, seconds=seconds, request_key=rkey,
                finish_reason=reply.finish_reason), None)

        semaphore = asyncio.Semaphore(config.concurrency)
        try:
            if pending:
                await _preflight(client, state, config)
            for job in pending:
                await semaphore.acquire()  # wait for a free slot
                if state.exhausted or state.abort_message or (stop is not None
                                                              and stop.is_set()):
                    semaphore.release()
                    break
                task = asyncio.create_task(run_one(job))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: semaphore.release())
            while in_flight:  # a task cancelled by an abort is not an error; a bug is
                for result in await asyncio.gather(*in_flight, return_exceptions=True):
                    if isinstance(result, Exception):
                        raise result
        except TeacherError as err:
            state.abort_message = str(err)
        finally:  # on an error or cancellation: stop what is in flight, keep what was written
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            bar.close()
            await client.close()
        summary.stopped_by_budget = state.exhausted
        summary.budget_note = state.budget_note if state.exhausted else ""
        summary.not_started = len(pending) - summary.done - summary.failed
        writer.sync()
        compact_results(out_path)

    summary.failures = dict(failures.most_common())
    summary.cost_usd = round(summary.cost_usd, 8)
    summary.seconds = round(time.perf_counter() - started, 3)
    log.info("%s: %s", out_path, summary)
    if state.abort_message is not None:
        error = TeacherError(redact(state.abort_message, key))
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def run_generation(
    tasks: Iterable[Any],
    out_path: str | Path,
    config: TeacherConfig | None = None,
    **kwargs: Any,
) -> RunSummary:
    """Blocking :func:`generate_traces`, for scripts AND notebooks.

    In a plain script it uses ``asyncio.run``. Inside Jupyter (where an event loop is already
    running and ``asyncio.run`` refuses to start) it runs the coroutine on its own loop in a
    worker thread and waits. Interrupting the kernel stops launching requests, lets the ones in
    flight finish and be written, then re-raises ``KeyboardInterrupt``; rerun to resume.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(generate_traces(tasks, out_path, config, **kwargs))
    stop = kwargs.pop("stop", None) or threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="cotlib-teacher") as pool:
        future = pool.submit(
            asyncio.run, generate_traces(tasks, out_path, config, stop=stop, **kwargs)
        )
        try:
            return future.result()
        except KeyboardInterrupt:
            stop.set()
            future.result()
            raise
