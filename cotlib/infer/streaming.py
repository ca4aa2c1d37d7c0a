"""Streaming: callbacks that print each stage as the model writes it."""

from __future__ import annotations

from collections.abc import Callable

from cotlib import stages
from cotlib.infer.answers import StageResult


def printer(file=None, show_stats: bool = True) -> dict[str, Callable]:
    """Callbacks that print each stage as it is written. Use as
    ``generate_stages(model, processor, image, question, **printer())``.

    >>> cb = printer()
    >>> cb["on_token"]("SUMMARY", " I will"); cb["on_token"]("SUMMARY", " I will count")
    <SUMMARY> I will count
    """
    import sys

    shown = {"stage": None, "text": ""}

    def on_token(stage: str, text: str) -> None:
        out = file or sys.stdout
        if stage != shown["stage"]:
            if shown["stage"] is not None:
                print(file=out)
            print(stages.open_tag(stage), end="", file=out)
            shown.update(stage=stage, text="")
        if text.startswith(shown["text"]):
            print(text[len(shown["text"]):], end="", file=out, flush=True)
        else:  # the text changed (e.g. a multi-byte character completed): reprint it
            print("\r" + stages.open_tag(stage) + text, end="", file=out, flush=True)
        shown["text"] = text

    def on_stage_end(stage: str, result: StageResult) -> None:
        out = file or sys.stdout
        if shown["stage"] != stage:  # nothing streamed (e.g. no on_token): print it whole
            print(stages.open_tag(stage) + " " + result.text, end="", file=out)
        stats = f"   [{result.tokens} tokens, {result.seconds:.2f} s, stop: {result.stop}]"
        print(" " + stages.close_tag(stage) + (stats if show_stats else ""), file=out)
        shown.update(stage=None, text="")

    return {"on_token": on_token, "on_stage_end": on_stage_end}
