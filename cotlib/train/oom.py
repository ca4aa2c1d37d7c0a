"""Out of memory: the settings to try next, and the peak memory a run used.

>>> from cotlib.train.settings import Resolved, TrainSettings
>>> r = Resolved("cpu", "cpu", "float32", 1, 1, None, None, False, "", False, 36)
>>> next_settings_to_try(TrainSettings(), r)[-1]
'a smaller model (e.g. smolvlm-256m) or a GPU with more memory'
"""

from __future__ import annotations

import resource

from cotlib.train.settings import Resolved, TrainSettings


def next_settings_to_try(settings: TrainSettings, resolved: Resolved) -> list[str]:
    """After an out-of-memory error: the settings to try, most promising first.

    >>> r = Resolved("t4-16gb", "cuda", "float16", 8, 2, 1024, True, False, "", False, 320)
    >>> next_settings_to_try(TrainSettings(), r)[0]
    'batch_size=4, grad_accum=4 (same effective batch)'
    """
    steps = []
    if resolved.batch_size > 1:
        steps.append(f"batch_size={resolved.batch_size // 2}, grad_accum="
                     f"{resolved.grad_accum * 2} (same effective batch)")
    if not resolved.gradient_checkpointing:
        steps.append("gradient_checkpointing=True (recompute activations: ~30% slower, far less "
                     "memory)")
    if resolved.do_image_splitting:
        if resolved.longest_edge and resolved.longest_edge > 1024:
            steps.append(f"longest_edge={resolved.longest_edge // 2} (fewer image tiles)")
        steps.append("do_image_splitting=False (one view per image: 64 image tokens on SmolVLM)")
    elif resolved.longest_edge and resolved.longest_edge > 448 and not resolved.do_image_splitting \
            and resolved.do_image_splitting is None:
        steps.append(f"longest_edge={resolved.longest_edge // 2} (fewer image tokens)")
    if resolved.device == "cuda" and not resolved.qlora:
        steps.append("qlora=True (4-bit base weights with bitsandbytes)")
    if settings.adapt_vision:
        steps.append("adapt_vision=False (frozen vision tower keeps no activations)")
    steps.append("a smaller model (e.g. smolvlm-256m) or a GPU with more memory")
    return steps


def peak_memory_gb(device: str) -> tuple[float, str]:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "torch.cuda.max_memory_allocated"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kb / 2**20, "peak RSS of the whole process (resource.ru_maxrss)"
