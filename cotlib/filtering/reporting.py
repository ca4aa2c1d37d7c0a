"""The filter's report (counts per reason and task type, stage lengths, examples) and its
agreement with a known truth (the local teacher's fault-injection log)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotlib import stages
from cotlib.filtering.checks import excerpt, word_count
from cotlib.filtering.run import KEPT, Verdict, record_text
from cotlib.tables import frame_table
from cotlib.teacher.store import parse_text

# -----------------------------------------------------------------------------
# the report


@dataclass
class FilterReport:
    """What the filter did: counts per reason and task type, stage lengths, examples.

    ``reasons``: rows = reasons (``kept`` first), columns = task types and ``total``; each trace
    is counted once, under its first reason. ``lengths``: one row per trace with the word count
    of every stage (NaN when the stage is missing). ``examples``: a few traces per reason.
    """

    reasons: Any  # pandas.DataFrame
    lengths: Any  # pandas.DataFrame
    examples: dict[str, list[dict]]
    n_traces: int
    n_kept: int

    def summary(self) -> str:
        rate = self.n_kept / self.n_traces if self.n_traces else 0.0
        rejected = self.reasons.drop(index=KEPT, errors="ignore")["total"]
        top = ", ".join(f"{r} ({c})" for r, c in rejected.head(3).items() if c) or "none"
        return (f"kept {self.n_kept} of {self.n_traces} traces ({rate:.0%}); "
                f"top rejection reasons: {top}")

    def examples_table(self, width: int = 100):
        """One row per example: reason, task id, the check's explanation, a text excerpt."""
        import pandas as pd

        rows = [{"reason": reason, "task_id": e["task_id"], "why": excerpt(e["detail"], 70),
                 "text": excerpt(e["text"], width)}
                for reason, items in self.examples.items() for e in items]
        return pd.DataFrame(rows, columns=["reason", "task_id", "why", "text"])

    def plot_reasons(self):
        """Horizontal bars: how many traces each reason rejected, split by task type."""
        import matplotlib.pyplot as plt

        data = self.reasons.drop(index=KEPT, errors="ignore").drop(columns="total")
        fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(data), 2) + 1.2))
        if len(data):
            data.iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.7, colormap="tab20")
            ax.legend(fontsize=7, ncol=2, loc="lower right", title="task type")
        else:
            ax.text(0.5, 0.5, "nothing rejected", ha="center", va="center")
        ax.set_xlabel("rejected traces")
        ax.set_title(self.summary(), fontsize=9)
        fig.tight_layout()
        return fig

    def plot_lengths(self):
        """Histogram of the words per stage, kept traces vs rejected ones."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(stages.STAGES), figsize=(13, 3))
        for ax, stage in zip(axes, stages.STAGES):
            col = self.lengths[stage]
            for kept, colour, label in ((True, "tab:green", "kept"),
                                        (False, "tab:red", "rejected")):
                values = col[self.lengths["kept"] == kept].dropna()
                if len(values):
                    ax.hist(values, bins=20, alpha=0.6, color=colour, label=label)
            ax.set_title(stage, fontsize=9)
            ax.set_xlabel("words")
        axes[0].set_ylabel("traces")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_markdown(self) -> str:
        lines = ["# Filter report", "", self.summary(), "", "## Traces per reason and task type",
                 "", frame_table(self.reasons), "", "## Words per stage (kept traces)", ""]
        kept = self.lengths[self.lengths["kept"]]
        if len(kept):
            desc = kept[list(stages.STAGES)].describe().loc[["min", "50%", "max"]].round(0)
            lines.append(frame_table(desc.rename(index={"50%": "median"})))
        else:
            lines.append("(no kept traces)")
        lines += ["", "## Examples of each rejection", ""]
        table = self.examples_table()
        lines.append(frame_table(table.set_index("reason")) if len(table) else "(none)")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> list[Path]:
        """Write filter_report.md, filter_reasons.csv and two figures into ``folder``."""
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "filter_report.md", folder / "filter_reasons.csv",
                 folder / "filter_reasons.png", folder / "filter_lengths.png"]
        paths[0].write_text(self.to_markdown())
        self.reasons.to_csv(paths[1])
        for fig, path in ((self.plot_reasons(), paths[2]), (self.plot_lengths(), paths[3])):
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return paths


def report(
    verdicts: Sequence[Verdict], records: Sequence[Mapping], n_examples: int = 3
) -> FilterReport:
    """Summarise a filter run: counts per reason per task type, stage lengths, examples."""
    import pandas as pd

    if len(records) != len(verdicts):
        raise ValueError(f"{len(records)} records but {len(verdicts)} verdicts")
    counts = Counter((v.reason, v.task_type or "unknown") for v in verdicts)
    types = sorted({t for _, t in counts})
    reason_names = [KEPT] + sorted({r for r, _ in counts if r != KEPT},
                                   key=lambda r: (-sum(c for (r2, _), c in counts.items()
                                                       if r2 == r), r))
    table = pd.DataFrame(
        [[counts.get((r, t), 0) for t in types] for r in reason_names],
        index=pd.Index(reason_names, name="reason"), columns=types,
    )
    table["total"] = table.sum(axis=1)

    rows = []
    examples: dict[str, list[dict]] = defaultdict(list)
    for v, record in zip(verdicts, records):
        found = parse_text(record_text(record)).stages
        rows.append({"task_id": v.task_id, "task_type": v.task_type, "kept": v.kept,
                     "reason": v.reason,
                     **{s: (word_count(found[s]) if s in found else float("nan"))
                        for s in stages.STAGES}})
        if not v.kept and len(examples[v.reason]) < n_examples:
            examples[v.reason].append({"task_id": v.task_id, "detail": v.details.get(v.reason, ""),
                                       "text": record_text(record)})
    lengths = pd.DataFrame(rows, columns=["task_id", "task_type", "kept", "reason",
                                          *stages.STAGES])
    ordered = {r: examples[r] for r in reason_names if r in examples}
    return FilterReport(table, lengths, ordered, len(verdicts), sum(v.kept for v in verdicts))


# -----------------------------------------------------------------------------
# agreement with a known truth (the local teacher's fault-injection log)

#: Fault kinds the local teacher injects, and the reason family that should reject each.
EXPECTED_FAMILY: dict[str, str] = {
    "clean": KEPT,
    "malformed": "format",
    "wrong_answer": "answer",
    "refusal": "refusal",
}


def injected_kinds(records: Sequence[Mapping], injections: Iterable[Mapping]) -> list[str]:
    """Per record, the content fault the local teacher injected into its response ("malformed",
    "wrong_answer", "refusal") or "clean", joined on ``request_key`` (records and log entries
    both carry it). Transport faults (429, 500) and notes are ignored: the client retried them.
    If a key has several content faults (the same image and question asked twice), the last
    one counts.

    >>> injected_kinds([{"request_key": "k1"}, {"request_key": "k2"}],
    ...                [{"request_key": "k2", "fault": "refusal"}])
    ['clean', 'refusal']
    """
    content = {e.get("request_key"): e["fault"] for e in injections
               if e.get("fault") in EXPECTED_FAMILY and e.get("fault") != "clean"}
    return [content.get(r.get("request_key") if isinstance(r, Mapping) else None, "clean")
            for r in records]


def confusion_table(verdicts: Sequence[Verdict], injected: Sequence[str]):
    """Rows: what was injected into each trace; columns: the verdict's reason family; counts.

    >>> v = [Verdict(True, []), Verdict(False, ["refusal"]), Verdict(False, ["format:missing"])]
    >>> int(confusion_table(v, ["clean", "refusal", "malformed"]).loc["refusal", "refusal"])
    1
    """
    import pandas as pd

    if len(verdicts) != len(injected):
        raise ValueError(f"{len(verdicts)} verdicts but {len(injected)} injection labels")
    counts = Counter((kind, v.family) for v, kind in zip(verdicts, injected))
    kinds = [k for k in EXPECTED_FAMILY if any(k == i for i, _ in counts)]
    kinds += sorted({i for i, _ in counts} - set(kinds))
    families = [KEPT] + [f for f in ("format", "answer", "refusal") if f != KEPT]
    families += sorted({f for _, f in counts} - set(families))
    table = pd.DataFrame([[counts.get((k, f), 0) for f in families] for k in kinds],
                         index=pd.Index(kinds, name="injected"), columns=families)
    table["total"] = table.sum(axis=1)
    return table


def agreement(verdicts: Sequence[Verdict], injected: Sequence[str]) -> dict[str, float]:
    """Per injected kind, the fraction of traces whose verdict is the expected one
    (``EXPECTED_FAMILY``: clean → kept, malformed → format, …).

    >>> agreement([Verdict(True, []), Verdict(False, ["answer:wrong"])], ["clean", "wrong_answer"])
    {'clean': 1.0, 'wrong_answer': 1.0}
    """
    hits: Counter = Counter()
    totals: Counter = Counter()
    for v, kind in zip(verdicts, injected):
        totals[kind] += 1
        hits[kind] += v.family == EXPECTED_FAMILY.get(kind, "?")
    return {k: hits[k] / totals[k] for k in totals}
