"""Generate four-stage traces with a teacher model through the official ``openai`` client.

A teacher (GPT-4o in LLaVA-CoT; here any OpenAI-compatible server, including the local one in
:mod:`cotlib.teacher_server`) receives the image, a fixed instruction and the question -- plus the
standard answer in *answer-conditioned* mode -- and writes
``<SUMMARY>…</SUMMARY> <CAPTION>…</CAPTION> <REASONING>…</REASONING> <CONCLUSION>…</CONCLUSION>``.

This package holds, in one place:

- the prompt (``TEACHER_INSTRUCTION``, :func:`build_messages`, :func:`request_text`) and its
  inverse (:func:`parse_request_text`), shared with the local teacher and the tests;
- prices and cost estimates (``PRICES``, :func:`estimate_cost`, :func:`estimate_run_cost`);
- key handling that never shows the key and sends OpenAI's key to OpenAI only
  (:func:`resolve_api_key`, :func:`openai_client`, :class:`Secret`, :func:`redact`);
- :func:`generate_traces` (async) and :func:`run_generation` (sync, works inside Jupyter):
  bounded concurrency, retries with backoff, a budget cap, crash-safe resumable JSONL output;
- the OpenAI Batch API path (:func:`write_batch_file`, :func:`read_batch_output`).

>>> from cotlib import synth
>>> task = synth.make_task(0, "count_color")
>>> messages = build_messages(task)
>>> print(messages[1]["content"][1]["text"])
Question: How many purple objects are there?
Standard answer: 1
>>> parse_request_text(messages[1]["content"][1]["text"]).mode
'conditioned'

Going big
---------
The same code drives three scales; only :class:`TeacherConfig` changes.

1. **Local teacher** (offline, free): ``with LocalTeacher() as t:
   TeacherConfig(model="cotlib-local-teacher", base_url=t.base_url)``.
2. **Your own open model with vLLM** (one GPU, no per-token cost)::

       pip install vllm
       vllm serve Qwen/Qwen2.5-VL-7B-Instruct --max-model-len 8192 \\
           --limit-mm-per-prompt '{"image": 1}'

   then ``TeacherConfig(model="Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://HOST:8000/v1",
   concurrency=64)``. vLLM batches concurrent requests on the GPU, so raise ``concurrency``
   (32-256) until throughput stops growing. No key is needed (a dummy one is sent: never your
   ``OPENAI_API_KEY``) unless you started vLLM with ``--api-key``; then export that key as
   ``COTLIB_TEACHER_API_KEY`` (or name your own variable in ``api_key_env``). Add a price to
   ``prices`` if you want a budget cap to mean GPU-hours.
3. **OpenAI** (``base_url=None``, key in ``OPENAI_API_KEY``): live requests with
   :func:`run_generation`, or, for thousands of tasks, the **Batch API** at half the price with a
   24 h turnaround and its own, much higher rate limits::

       write_batch_file(tasks, "runs/x/batch.jsonl", config)      # one request per line
       from openai import OpenAI
       client = OpenAI()
       f = client.files.create(file=open("runs/x/batch.jsonl", "rb"), purpose="batch")
       batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
       # ... later (poll client.batches.retrieve(batch.id).status until "completed")
       batch = client.batches.retrieve(batch.id)
       client.files.content(batch.output_file_id).write_to_file("runs/x/batch_out.jsonl")
       read_batch_output("runs/x/batch_out.jsonl", "runs/x/traces.jsonl")

   A batch file holds at most 50,000 requests and 200 MB; split bigger runs. Failed requests
   appear in the output (or in ``batch.error_file_id``) and become ``"failed"`` records, which a
   later :func:`run_generation` on the same ``traces.jsonl`` retries live.

The package, read in this order (each module imports only the ones above it):

- :mod:`~cotlib.teacher.prompt`: the instruction, request text and its inverse, the standard answer;
- :mod:`~cotlib.teacher.client`: :class:`TeacherConfig`, the request body, the key rule, the
  ``openai`` client;
- :mod:`~cotlib.teacher.cost`: prices, image billing rules, run and worst-case cost estimates;
- :mod:`~cotlib.teacher.store`: the trace record and the crash-safe JSONL results file;
- :mod:`~cotlib.teacher.replies`: error classes, retry timing, reading a response;
- :mod:`~cotlib.teacher.run`: :func:`generate_traces` / :func:`run_generation`;
- :mod:`~cotlib.teacher.batch`: the Batch API; :mod:`~cotlib.teacher.cli`: ``cotlib generate``.
"""

from cotlib.teacher.batch import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REQUESTS,
    BATCH_URL,
    batch_request,
    read_batch_output,
    write_batch_file,
)
from cotlib.teacher.cli import build_parser, generate_main
from cotlib.teacher.client import (
    DUMMY_KEY,
    OPENAI_API_HOST,
    OPENAI_DEFAULT_URL,
    OPENAI_KEY_ENV,
    SERVER_KEY_ENV,
    Secret,
    TeacherConfig,
    TeacherError,
    check_teacher,
    effective_base_url,
    get_api_key,
    is_openai_url,
    key_for,
    openai_client,
    redact,
    resolve_api_key,
)
from cotlib.teacher.cost import (  # noqa: I001 (the package's reading order)
    BATCH_DISCOUNT,
    COURSE_IMAGE_SIZE,
    IMAGE_TOKEN_RULES,
    PRICES,
    TEXT_TOKENS_PER_TASK,
    estimate_cost,
    estimate_run_cost,
    image_tokens,
    price_for,
    prompt_tokens_bound,
    worst_case_cost,
)
from cotlib.teacher.prompt import (
    BLIND_INSTRUCTION,
    LOCAL_MODEL,
    MODES,
    TEACHER_INSTRUCTION,
    RequestText,
    build_messages,
    instruction,
    messages_key,
    parse_request_text,
    request_key,
    request_parts,
    request_text,
    standard_answer,
    task_data_url,
)
from cotlib.teacher.replies import (
    MAX_BELIEVABLE_TOKENS,
    BadResponse,
    Reply,
    TeacherTimeout,
    backoff_s,
    classify_error,
    complete_with_retries,
    read_reply,
    read_usage,
    retry_after_s,
)
from cotlib.teacher.run import (
    RunState,
    RunSummary,
    call_with_retries,
    connection_limits,
    describe_failure,
    generate_traces,
    run_generation,
    unreachable_message,
)
from cotlib.teacher.store import (
    DERIVED_KEYS,
    UNREADABLE,
    Line,
    ResultsWriter,
    Trace,
    TraceError,
    compact_results,
    encode_line,
    latest_records,
    make_record,
    read_lines,
    read_records,
    repair_results,
    trace_problem,
)

__all__ = [
    "BATCH_DISCOUNT",
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "BATCH_URL",
    "BLIND_INSTRUCTION",
    "BadResponse",
    "COURSE_IMAGE_SIZE",
    "DERIVED_KEYS",
    "DUMMY_KEY",
    "IMAGE_TOKEN_RULES",
    "LOCAL_MODEL",
    "Line",
    "MAX_BELIEVABLE_TOKENS",
    "MODES",
    "OPENAI_API_HOST",
    "OPENAI_DEFAULT_URL",
    "OPENAI_KEY_ENV",
    "PRICES",
    "Reply",
    "RequestText",
    "ResultsWriter",
    "RunState",
    "RunSummary",
    "SERVER_KEY_ENV",
    "Secret",
    "TEACHER_INSTRUCTION",
    "TEXT_TOKENS_PER_TASK",
    "TeacherConfig",
    "TeacherError",
    "TeacherTimeout",
    "Trace",
    "TraceError",
    "UNREADABLE",
    "backoff_s",
    "batch_request",
    "build_messages",
    "build_parser",
    "call_with_retries",
    "check_teacher",
    "classify_error",
    "compact_results",
    "complete_with_retries",
    "connection_limits",
    "describe_failure",
    "effective_base_url",
    "encode_line",
    "estimate_cost",
    "estimate_run_cost",
    "generate_main",
    "generate_traces",
    "get_api_key",
    "image_tokens",
    "instruction",
    "is_openai_url",
    "key_for",
    "latest_records",
    "make_record",
    "messages_key",
    "openai_client",
    "parse_request_text",
    "price_for",
    "prompt_tokens_bound",
    "read_batch_output",
    "read_lines",
    "read_records",
    "read_reply",
    "read_usage",
    "redact",
    "repair_results",
    "request_key",
    "request_parts",
    "request_text",
    "resolve_api_key",
    "retry_after_s",
    "run_generation",
    "standard_answer",
    "task_data_url",
    "trace_problem",
    "unreachable_message",
    "worst_case_cost",
    "write_batch_file",
]
