"""Sampling settings and the choice of the next token (argmax or a temperature / top-p sample).

>>> Sampling(temperature=0.6, top_p=0.9).top_p
0.9
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; ``None`` where a function takes ``sampling`` means greedy.

    LLaVA-CoT's stage-level search samples with temperature 0.6 and top-p 0.9.
    """

    temperature: float = 0.6
    top_p: float = 0.9
    seed: int | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0; pass sampling=None for greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def seeded_generator(model, sampling: Sampling | None):
    """A ``torch.Generator`` on ``model``'s device seeded with ``sampling.seed``; None when
    decoding is greedy or unseeded (torch's global random state is then used).

    >>> seeded_generator(None, None) is None
    True
    """
    if sampling is None or sampling.seed is None:
        return None
    import torch

    from cotlib.infer.plumbing import device_of

    return torch.Generator(device=device_of(model)).manual_seed(sampling.seed)


def choose_next(logits, sampling: Sampling | None, generator):
    """Pick one token per row: argmax, or a temperature / top-p sample. Returns ids and the
    chosen tokens' log-probabilities under the unmodified model distribution."""
    import torch

    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    if sampling is None:
        ids = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(dim=-1) - sorted_p > sampling.top_p  # keep the first always
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    chosen = logp.gather(-1, ids[:, None]).squeeze(-1)
    return ids.tolist(), chosen.tolist()
