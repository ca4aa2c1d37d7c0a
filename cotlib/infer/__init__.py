"""Stage-by-stage decoding: one stage at a time, reusing the cache, with live streaming.

A LLaVA-CoT model writes ``<SUMMARY> … </SUMMARY>``, then ``<CAPTION> … </CAPTION>`` and so on, in
one pass. Decoding it *one stage at a time* lets us stream each stage, time it, stop it, edit it,
or (``cotlib.search``) sample several candidates for it and keep the best. The loop here:

1. encode the image and the prompt **once** (the "prefill"), keeping the key/value cache;
2. for each stage: feed the opening tag (``<SUMMARY>``; for later stages the separator and the
   tag, ``"\\n\\n<CAPTION>"``), then pick tokens one by one until the decoded stage text contains
   its closing tag (or a token limit, or the end-of-answer token);
3. the stop token is not fed yet: it becomes part of the next stage's opening chunk, re-tokenized
   together with the separator so the model sees exactly the tokens of the rendered trace
   (what training data looks like, see :func:`cotlib.stages.render`).

With greedy decoding this gives the same tokens as one uninterrupted ``model.generate`` whenever the
model writes the tags itself (tested), while the image is encoded once instead of once per stage as
in LLaVA-CoT's demo script (``reuse_cache=False`` reproduces that naive way, for comparison).

Batches of questions are left-padded; each row stops on its own (finished rows are fed masked
padding). Positions are computed from the attention mask, so padding and stopped rows never
shift a row's positions. Qwen-VL's multimodal rotary positions (``rope_deltas``, which the model
keeps on itself and overwrites whenever it encodes another image) are saved per row in the
:class:`DecodeState` and the model's own value is restored after each prefill.

>>> from cotlib import models, synth
>>> model, processor = models.load(models.tiny("idefics3"))
>>> task = synth.make_tasks(1, seed=0)[0]
>>> answer = generate_stages(model, processor, task.get_image(), task.prompt_question(),
...                          force_tokens_per_stage=3)
>>> list(answer.stages), [r.tokens for r in answer.stages.values()]
(['SUMMARY', 'CAPTION', 'REASONING', 'CONCLUSION'], [3, 3, 3, 3])

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.infer.answers` (the text format, :class:`StageResult`, :class:`StagedAnswer`),
:mod:`~cotlib.infer.sampling` (:class:`Sampling`, picking the next token),
:mod:`~cotlib.infer.plumbing` (tokenizer, device, cache and rotary-position details),
:mod:`~cotlib.infer.state` (:class:`DecodeState` and its forward passes),
:mod:`~cotlib.infer.staged` (the staged decoder: :func:`start`, :func:`feed`,
:func:`decode_stage`, :func:`finish`, :func:`generate_stages` and friends),
:mod:`~cotlib.infer.generate` (free text on the same cache, the one-pass reference,
:func:`memorise`), :mod:`~cotlib.infer.streaming` (:func:`printer`). Every public name is
re-exported here: ``from cotlib import infer; infer.X``.
"""

from cotlib.infer.answers import (
    DEFAULT_MAX_TOKENS,
    EOS,
    GIVEN,
    LENGTH,
    SEP,
    TAG,
    StagedAnswer,
    StageResult,
    answer_lead,
    stage_block,
)
from cotlib.infer.generate import generate_ids, generate_one_pass, generate_text, memorise
from cotlib.infer.plumbing import device_of, eos_ids, rope_owner
from cotlib.infer.sampling import Sampling, choose_next, seeded_generator
from cotlib.infer.staged import (
    continue_from,
    decode_stage,
    feed,
    finish,
    generate_stages,
    generate_stages_batch,
    start,
)
from cotlib.infer.state import DecodeState
from cotlib.infer.streaming import printer

# The helpers' former private names, still reached through the package (cotlib.search and
# cotlib.widgets use _device; tests _eos_ids, _rope_owner and _choose).
_device, _eos_ids, _rope_owner, _choose = device_of, eos_ids, rope_owner, choose_next

__all__ = [
    "DEFAULT_MAX_TOKENS", "EOS", "GIVEN", "LENGTH", "SEP", "TAG", "DecodeState", "Sampling",
    "StageResult", "StagedAnswer", "answer_lead", "continue_from", "decode_stage", "feed",
    "finish", "generate_ids", "generate_one_pass", "generate_stages", "generate_stages_batch",
    "generate_text", "memorise", "printer", "seeded_generator", "stage_block", "start",
]
