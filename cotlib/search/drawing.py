"""Drawing a search tree with matplotlib (:func:`draw_tree`)."""

from __future__ import annotations

from cotlib import stages
from cotlib.search.tree import SearchTree, format_score, shorten


def draw_tree(tree: SearchTree, ax=None, width: int = 28):
    """Draw the search tree with matplotlib: one column per stage, every candidate a box (the
    winner green, candidates that never closed their stage red), an edge from each stage's
    winner to the next stage's candidates. Returns the axes."""
    import matplotlib.pyplot as plt

    n_rows = max(len(s.candidates) for s in tree.steps)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2 * len(tree.steps) + 1, 1.0 * n_rows + 1.5))
    ax.set_xlim(-0.8, len(tree.steps) - 0.2)
    ax.set_ylim(n_rows - 0.4, -1.2)
    ax.axis("off")
    ax.text(-0.7, -0.9, "question", fontsize=8, weight="bold")
    prev = (-0.55, (n_rows - 1) / 2)
    ax.plot(*prev, "ko", markersize=5)
    at: dict[tuple[str, int], tuple[float, float]] = {}  # (stage, index) -> right edge of its box
    chosen = {tree.steps[-1].stage: tree.steps[-1].winner} if tree.steps else {}
    for step in reversed(tree.steps):  # SWIRES: the path to the answer, stage by stage
        c = next((c for c in step.candidates if c.index == chosen.get(step.stage)), None)
        if c is not None and c.parent is not None and step.stage in stages.STAGES:
            previous = stages.STAGES[stages.STAGES.index(step.stage) - 1]
            chosen.setdefault(previous, c.parent)
    for x, step in enumerate(tree.steps):
        extra = [part for part in (step.note.split(";")[0] if step.note.startswith("retrace")
                                   else "", "→ retrace" if "retrace to" in step.note else "")
                 if part]
        title = "\n".join([step.stage, *extra])
        ax.text(x, -0.9, title, ha="center", fontsize=9, weight="bold")
        offset = (n_rows - len(step.candidates)) / 2
        wins = {c.index: 0 for c in step.candidates}
        for m in step.comparisons:
            wins[m.winner] += 1
        for pos, c in enumerate(step.candidates):
            y = offset + pos
            source = prev
            if c.parent is not None and step.stage in stages.STAGES:
                previous = stages.STAGES[stages.STAGES.index(step.stage) - 1]
                source = at.get((previous, c.parent), prev)
            ax.annotate("", xy=(x - 0.42, y), xytext=source,
                        arrowprops=dict(arrowstyle="-", color="0.75", lw=0.8))
            best = chosen.get(step.stage, step.winner) if step.kept else step.winner
            colour = "#c8f0c8" if c.index == best else (
                "#f6d0d0" if not c.closed else ("#dde8f8" if c.index in step.kept[1:] else
                                                "#eeeeee"))
            label = f"[{c.index}] {shorten(c.text, width)}\n"
            label += (f"score {format_score(c.score)}" if c.score is not None
                      else f"logp/tok {c.mean_logprob:.2f}")
            if step.comparisons:
                label += f"  wins {wins[c.index]}"
            ax.text(x, y, label, ha="center", va="center", fontsize=7, family="monospace",
                    bbox=dict(boxstyle="round,pad=0.3", fc=colour, ec="0.5"))
            at[step.stage, c.index] = (x + 0.42, y)
        winner_pos = next((p for p, c in enumerate(step.candidates) if c.index == step.winner),
                          0)
        prev = (x + 0.42, offset + winner_pos)
    header_lines = max((1 + bool(s.note.startswith("retrace")) + ("retrace to" in s.note)
                        for s in tree.steps), default=1)
    ax.set_title(f"{tree.method} search — scorer: {tree.scorer} — answer: "
                 f"{shorten(tree.answer.final_answer, 40)!r}", fontsize=9,
                 pad=6 + 11 * (header_lines - 1))
    return ax
