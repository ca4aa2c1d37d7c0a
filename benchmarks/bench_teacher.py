"""How close does trace generation get to the ideal throughput ``concurrency / latency``?

Runs the local teacher with a fixed latency (300 ms, no jitter) and sends the same tasks two ways:

- **async**: ``cotlib.teacher.run_generation`` -- one ``openai.AsyncOpenAI`` client, an
  ``asyncio.Semaphore`` of N, crash-safe JSONL writing included;
- **threads**: the LLaVA-CoT way -- a ``ThreadPoolExecutor`` of N threads, each calling the
  blocking ``openai.OpenAI`` client (results kept in memory, nothing written).

By default the teacher runs in a child process (``LocalTeacher(process=True)``) so its CPU work
does not share the benchmark's GIL; ``--in-process`` runs it in a thread instead.

    .venv/bin/python benchmarks/bench_teacher.py            # ~20 s
    .venv/bin/python benchmarks/bench_teacher.py --scale 4  # 4x the tasks: steady state
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from cotlib import stages, synth, teacher
from cotlib.teacher_server import Faults, LocalTeacher

RUNS = ((1, 8), (8, 40), (64, 192))  # (concurrency, tasks)


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
    client = openai.OpenAI(base_url=base_url, api_key=teacher.DUMMY_KEY, max_retries=0)

    def one(task: synth.Task) -> str:
        response = client.chat.completions.create(model=teacher.LOCAL_MODEL,
                                                  messages=teacher.build_messages(task))
        text = response.choices[0].message.content or ""
        stages.parse(text)
        return text

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        texts = list(pool.map(one, tasks))
    seconds = time.perf_counter() - started
    client.close()
    assert len(texts) == len(tasks)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--scale", type=int, default=1, help="multiply the task counts")
    parser.add_argument("--in-process", action="store_true", help="teacher in a thread")
    args = parser.parse_args(argv)

    runs = [(c, n * args.scale) for c, n in RUNS]
    tasks = synth.make_tasks(max(n for _, n in runs), seed=0)
    for task in tasks:  # render once, outside the timings
        task.get_image()
    latency = args.latency_ms / 1000
    load_before = os.getloadavg()[0]
    where = "thread" if args.in_process else "child process"
    print(f"local teacher ({where}), latency {args.latency_ms:g} ms, jitter 0; "
          f"{os.cpu_count()} CPU cores, load average {load_before:.2f}")
    rows = []
    with LocalTeacher(Faults(latency_ms=args.latency_ms), process=not args.in_process) as t:
        bench_threads(tasks[:4], t.base_url, 4)  # warm up both paths (imports, connections)
        bench_async(tasks[:4], t.base_url, 4)
        for concurrency, n in runs:
            ideal = concurrency / latency
            a = n / bench_async(tasks[:n], t.base_url, concurrency)
            b = n / bench_threads(tasks[:n], t.base_url, concurrency)
            rows.append((concurrency, n, ideal, a, b))
    print()
    print("| concurrency | tasks | ideal tasks/s | async tasks/s | async % ideal "
          "| threads tasks/s | threads % ideal |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, n, ideal, a, b in rows:
        print(f"| {concurrency} | {n} | {ideal:.1f} | {a:.1f} | {100 * a / ideal:.0f}% "
              f"| {b:.1f} | {100 * b / ideal:.0f}% |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
