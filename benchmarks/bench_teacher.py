"""How close does trace generation get to the ideal throughput ``concurrency / latency``?

Runs the local teacher with a fixed latency (300 ms, no jitter) and sends the same tasks two ways:

- **async**: ``cotlib.teacher.run_generation`` -- one ``openai.AsyncOpenAI`` client, an
  ``asyncio.Semaphore`` of N, crash-safe JSONL writing included;
- **threads**: the LLaVA-CoT way -- a ``ThreadPoolExecutor`` of N threads, each calling the
  blocking ``openai.OpenAI`` client (results kept in memory, nothing written).

Both timings include creating the client (building its TLS context costs ~20 ms of CPU) and
exclude PNG-encoding the images: they are encoded once, before the timed runs, and
``teacher.build_messages`` reuses the data URL (see ``teacher.task_data_url``), as a second run
over the same tasks in one process does.

The ideal assumes requests cost no CPU. They do: the client (openai's request building --
its parameter transform alone is ~0.6 ms --, httpx, parsing, writing the record) and the teacher
(FastAPI, PNG decoding, scene recovery) each spend 2-4 ms of CPU per request, so at 64 in flight
and 300 ms the pair needs more than a whole core. The second table shows that budget: on a small
machine shared with other work, CPU is the limit, not the concurrency machinery. (The async
client's HTTP stack costs ~0.5-1 ms more CPU per request than the blocking one here; connection
limits do not throttle: ``teacher.connection_limits`` keeps one connection per request in
flight.)

By default the teacher runs in a child process (``LocalTeacher(process=True)``) so its CPU work
does not share the benchmark's GIL and can be measured apart; ``--in-process`` runs it in a
thread instead (its CPU then counts as the client's).

    .venv/bin/python benchmarks/bench_teacher.py            # ~20 s
    .venv/bin/python benchmarks/bench_teacher.py --scale 2  # twice the tasks
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from cotlib import stages, synth, teacher
from cotlib.teacher_server import Faults, LocalTeacher

RUNS = ((1, 8), (8, 64), (64, 640))  # (concurrency, tasks): 8 or 10 rounds of requests each
GOAL = 0.80  # async throughput at 64 in flight, as a fraction of the ideal


def bench_async(tasks: list, base_url: str, concurrency: int) -> float:
    """Seconds for run_generation to finish ``tasks`` (fresh output file)."""
    cfg = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=base_url,
                                concurrency=concurrency, max_retries=0)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = teacher.run_generation(tasks, Path(tmp) / "traces.jsonl", cfg, progress=False)
        seconds = time.perf_counter() - started
    assert summary.done == len(tasks), summary
    return seconds


def bench_threads(tasks: list, base_url: str, concurrency: int) -> float:
    """Seconds for N threads sharing one blocking client to finish ``tasks``."""

    def one(task: synth.Task) -> str:
        response = client.chat.completions.create(model=teacher.LOCAL_MODEL,
                                                  messages=teacher.build_messages(task))
        text = response.choices[0].message.content or ""
        stages.parse(text)
        return text

    started = time.perf_counter()
    client = openai.OpenAI(base_url=base_url, api_key=teacher.DUMMY_KEY, max_retries=0)
    with ThreadPoolExecutor(concurrency) as pool:
        texts = list(pool.map(one, tasks))
    client.close()
    seconds = time.perf_counter() - started
    assert len(texts) == len(tasks)
    return seconds


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(bench: Callable[[list, str, int], float], tasks: list, base_url: str,
            concurrency: int, server_pid: int | None) -> tuple[float, float, float | None]:
    """(wall seconds, client CPU seconds, teacher CPU seconds or None) of one benchmark run."""
    server_before = cpu_seconds(server_pid) if server_pid else None
    cpu_before = time.process_time()
    seconds = bench(tasks, base_url, concurrency)
    client_cpu = time.process_time() - cpu_before
    server_after = cpu_seconds(server_pid) if server_pid else None
    server_cpu = None if server_before is None or server_after is None else (
        server_after - server_before)
    return seconds, client_cpu, server_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--scale", type=int, default=1, help="multiply the task counts")
    parser.add_argument("--in-process", action="store_true", help="teacher in a thread")
    args = parser.parse_args(argv)

    runs = [(c, n * args.scale) for c, n in RUNS]
    tasks = synth.make_tasks(max(n for _, n in runs), seed=0)
    for task in tasks:  # render and PNG-encode once, outside the timings
        teacher.build_messages(task)
    latency = args.latency_ms / 1000
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    where = "thread" if args.in_process else "child process"
    print(f"local teacher ({where}), latency {args.latency_ms:g} ms, jitter 0; {cores} CPU "
          f"cores; load average {load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min)")
    rows = []
    with LocalTeacher(Faults(latency_ms=args.latency_ms), process=not args.in_process) as t:
        pid = t._proc.pid if t._proc is not None else None
        bench_threads(tasks[:4], t.base_url, 4)  # warm up both paths (imports, connections)
        bench_async(tasks[:4], t.base_url, 4)
        for concurrency, n in runs:
            a = measure(bench_async, tasks[:n], t.base_url, concurrency, pid)
            b = measure(bench_threads, tasks[:n], t.base_url, concurrency, pid)
            rows.append((concurrency, n, concurrency / latency, a, b))

    print("\n| concurrency | tasks | ideal tasks/s | async tasks/s | async % ideal "
          "| threads tasks/s | threads % ideal |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, n, ideal, a, b in rows:
        print(f"| {concurrency} | {n} | {ideal:.1f} | {n / a[0]:.1f} "
              f"| {100 * n / a[0] / ideal:.0f}% | {n / b[0]:.1f} | {100 * n / b[0] / ideal:.0f}% |")

    def ms(cpu: float | None, n: int) -> str:
        return "n/a" if cpu is None else f"{1000 * cpu / n:.2f}"

    print("\nCPU per task (ms) and the CPU the ideal would need (cores = CPU per task x ideal "
          "tasks/s; the client and the teacher share this machine):")
    print("| concurrency | async: client | async: teacher | threads: client | threads: teacher "
          "| cores for ideal, async | cores for ideal, threads |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, n, ideal, a, b in rows:
        need = [(x[1] + (x[2] or 0.0)) / n * ideal for x in (a, b)]
        print(f"| {concurrency} | {ms(a[1], n)} | {ms(a[2], n)} | {ms(b[1], n)} | {ms(b[2], n)} "
              f"| {need[0]:.2f} | {need[1]:.2f} |")

    load_after = os.getloadavg()
    concurrency, n, ideal, a, _ = rows[-1]
    share = n / a[0] / ideal
    verdict = "met" if share >= GOAL else "NOT met"
    print(f"\nload average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
    print(f"goal (async >= {GOAL:.0%} of ideal at {concurrency} in flight): {verdict} "
          f"({share:.0%})")


if __name__ == "__main__":
    main()
