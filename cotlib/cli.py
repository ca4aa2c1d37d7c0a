"""Command line: ``cotlib demo | doctor | teacher serve | generate | train``.

>>> from cotlib.cli import build_parser
>>> build_parser().parse_args(["demo", "--tasks", "2"]).tasks
2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cotlib import env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the offline pipeline on the shipped defaults")
    demo.add_argument("--run", default="demo", help="run folder name under runs/ (default: demo)")
    demo.add_argument("--tasks", type=int, default=6, help="test tasks to answer")
    demo.add_argument("--family", default="idefics3", choices=("idefics3", "qwen2_vl"))

    sub.add_parser("doctor", help="check the setup: versions, GPU, disk, key presence")

    teacher = sub.add_parser("teacher", help="the local OpenAI-compatible teacher")
    teacher.add_argument("action", choices=("serve",))
    teacher.add_argument("rest", nargs=argparse.REMAINDER)

    sub.add_parser("generate", help="generate four-stage traces with a teacher (see --help)")
    sub.add_parser("train", help="LoRA fine-tuning with TRL's SFTTrainer (see --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Subcommands with their own parsers get their arguments untouched (argparse's REMAINDER
    # would not capture a leading option such as `generate --split ...`).
    if argv[:1] == ["generate"]:
        from cotlib import teacher

        return teacher.generate_main(argv[1:]) or 0
    if argv[:1] == ["train"]:
        from cotlib import train

        return train.main(argv[1:]) or 0
    if argv[:2] == ["teacher", "serve"]:
        from cotlib import teacher_server

        return teacher_server.main(argv[2:]) or 0
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo(args.run, n_tasks=args.tasks, family=args.family)
    if args.command == "doctor":
        print(env.report())
        return 0
    return 2  # `teacher` without `serve`: argparse has already explained the choices


def demo(run: str = "demo", *, n_tasks: int = 6, family: str = "idefics3") -> int:
    """The offline pipeline on the embedded defaults; writes ``runs/<run>/report.md``."""
    import torch

    from cotlib import models, stages, synth

    started = time.perf_counter()
    out = env.runs_dir() / run
    out.mkdir(parents=True, exist_ok=True)
    env.seed_everything(0)

    print(f"[1/3] loading {n_tasks} shipped test tasks from data/tasks/test")
    tasks = synth.load_split(env.DATA_DIR / "tasks" / "test")[:n_tasks]
    if not tasks:
        print("no tasks found in data/tasks/test: run `python scripts/make_data.py`")
        return 1
    for task in tasks[:2]:
        task.get_image().save(out / f"{task.id}.png")

    print(f"[2/3] building a tiny {family} model offline and loading it with from_pretrained")
    model, processor = models.load(models.tiny(family))
    params = models.count_parameters(model)["total"]

    print("[3/3] answering with the untrained tiny model (it is random: expect noise)")
    rows = []
    for task in tasks:
        prompt = models.chat_prompt(processor, task.prompt_question())
        inputs = models.encode(processor, [task.get_image()], [prompt])
        t0 = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        seconds = time.perf_counter() - t0
        output = processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed = stages.parse(output)
        rows.append({
            "task": task.id, "type": task.task_type, "question": task.question,
            "answer": task.answer, "output": output, "final_answer": stages.final_answer(output),
            "well_formed": parsed.ok, "seconds": round(seconds, 3),
        })
        print(f"  {task.task_type:18s} answer={task.answer!r:8s} model said {output[:40]!r}")

    lines = [
        "# cotlib demo report", "",
        f"- model: tiny {family}, {params:,} parameters, random weights (built offline)",
        f"- tasks: {len(rows)} from data/tasks/test", "",
        "| task type | question | answer | model output | well formed | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        output = r["output"].replace("|", "\\|").replace("\n", " ")[:60]
        lines.append(f"| {r['type']} | {r['question']} | {r['answer']} | {output} | "
                     f"{r['well_formed']} | {r['seconds']} |")
    lines += ["", f"Total time: {time.perf_counter() - started:.1f} s on {env.hardware().device}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "demo.json").write_text(json.dumps(rows, indent=2))
    print(f"report written to {Path(out) / 'report.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
