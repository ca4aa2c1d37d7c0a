"""What the local teacher answers to (its model name, body and image limits) and the faults it
may inject (:class:`Faults`)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from cotlib import teacher

log = logging.getLogger(__name__)


MODEL_ID = teacher.LOCAL_MODEL
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Images with more pixels than this are never decoded (a course scene has 192 x 192 = 36,864):
#: decoding one costs 3 bytes a pixel, and the server may hold several at once.
MAX_DECODE_PIXELS = 1024 * 1024
#: Models the local teacher answers to; any other name gets OpenAI's 404 ``model_not_found``.
MODELS = (MODEL_ID,)
IMAGE_TOKENS = 85
#: Seconds an idle keep-alive connection stays open. Longer than the openai client's 5 s, so the
#: client always closes first: a server closing a connection just as the client reuses it would
#: fail that request with a connection error.
KEEP_ALIVE_S = 30

#: Fault kinds that the server injects on purpose.
INJECTED = ("rate_limit", "server_error", "refusal", "malformed", "wrong_answer")
#: Notes about requests the teacher could not answer faithfully (also in the injection log).
NOTES = ("answer_disagrees", "not_a_scene", "unknown_question")


@dataclass
class Faults:
    """What can go wrong, per request. Rates are probabilities in [0, 1].

    Latency is the time from a request's arrival to its response (processing included, like a
    real API), uniform in ``[latency_ms - latency_jitter_ms, latency_ms + latency_jitter_ms]``
    (clipped at 0). It applies to answers and 500s; injected 429s come back at once.
    ``rate_429 + rate_500 <= 1`` and ``rate_refusal + rate_malformed + rate_wrong_answer <= 1``.

    >>> Faults(rate_429=0.2, retry_after_s=0.05).rate_429
    0.2
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 0.1  # sent as Retry-After (seconds) and retry-after-ms
    rate_500: float = 0.0
    rate_malformed: float = 0.0  # a stage missing, an unclosed tag, or stages out of order
    rate_wrong_answer: float = 0.0  # CONCLUSION contradicts the solution
    rate_refusal: float = 0.0  # "I'm sorry, I can't help with that."
    seed: int = 0

    def __post_init__(self) -> None:
        rates = {k: v for k, v in asdict(self).items() if k.startswith("rate_")}
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.rate_429 + self.rate_500 > 1.0:
            raise ValueError("rate_429 + rate_500 must be <= 1")
        if self.rate_refusal + self.rate_malformed + self.rate_wrong_answer > 1.0:
            raise ValueError("rate_refusal + rate_malformed + rate_wrong_answer must be <= 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.retry_after_s < 0:
            raise ValueError("latencies and retry_after_s must be >= 0")
