"""Exercise checkers for the notebooks: they explain the first mistake and never crash the lesson.

Each checker takes the learner's function, runs it on a table of cases against the library's own
answer, prints one clear line, and returns ``True``/``False``. A stub that still raises
``NotImplementedError`` is reported as "not done yet" so the notebook can continue with the
library's version.

>>> cmp("answer", 3, 3)
✅ answer: matches
True
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cotlib import stages

#: The model families the notebooks teach: the checkers compare against both (the notebooks'
#: printed results name them), whatever else ``cotlib.families`` registers.
COURSE_FAMILIES = ("idefics3", "qwen2_vl")


@dataclass
class Case:
    """One input for a checker: positional ``args``, the expected result, and a hint for a miss."""

    name: str
    args: tuple
    expected: Any
    hint: str = ""


def cmp(name: str, mine: Any, ref: Any) -> bool:
    """Compare a learner's value with the reference and say so in one line (Karpathy's ``cmp``).

    Tensors and arrays are compared elementwise with a tolerance; the largest difference is shown.

    >>> cmp("count", 2, 3)
    ❌ count: got 2, expected 3
    False
    """
    try:
        import torch

        if isinstance(mine, torch.Tensor) or isinstance(ref, torch.Tensor):
            mine_t, ref_t = torch.as_tensor(mine).float(), torch.as_tensor(ref).float()
            if mine_t.shape != ref_t.shape:
                print(f"❌ {name}: shape {tuple(mine_t.shape)}, expected {tuple(ref_t.shape)}")
                return False
            diff = (mine_t - ref_t).abs().max().item() if mine_t.numel() else 0.0
            ok = torch.allclose(mine_t, ref_t, atol=1e-5, rtol=1e-4)
            print(f"{'✅' if ok else '❌'} {name}: max difference {diff:.2g}")
            return bool(ok)
    except ImportError:  # pragma: no cover
        pass
    if mine == ref:
        print(f"✅ {name}: matches")
        return True
    print(f"❌ {name}: got {mine!r}, expected {ref!r}")
    return False


def run_cases(title: str, fn: Callable, cases: Iterable[Case]) -> bool:
    """Run ``fn`` on each case; print the first failure with its hint, or a pass line.

    >>> run_cases("double", lambda x: 2 * x, [Case("two", (2,), 4)])
    ✅ double: all 1 cases pass
    True
    """
    cases = list(cases)
    for case in cases:
        try:
            got = fn(*case.args)
        except NotImplementedError:
            print(f"⏳ {title}: not done yet — write the function above and run this cell again. "
                  "The notebook continues with cotlib's version meanwhile.")
            return False
        except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
            last = traceback.extract_tb(err.__traceback__)[-1]
            print(f"❌ {title}: case '{case.name}' raised {type(err).__name__}: {err} "
                  f"(line {last.lineno}: {last.line!r})")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
        if got != case.expected:
            print(f"❌ {title}: case '{case.name}': got {got!r}, expected {case.expected!r}")
            print(f"   input: {_short(case.args)}")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
    print(f"✅ {title}: all {len(cases)} cases pass")
    return True


def _short(args: tuple, limit: int = 160) -> str:
    text = ", ".join(repr(a) for a in args)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Notebook 00: how much memory do the weights take?
# --------------------------------------------------------------------------------------------

def weights_gib_cases() -> list[Case]:
    """Cases for the notebook 00 exercise ``weights_gib(params_millions, dtype) -> float``. The
    hints here are for a function that raises; a wrong number gets a hint chosen by what it is
    (:func:`weights_gib_hint`)."""
    from cotlib import models

    bytes_hint = ("bytes = parameters x bytes per parameter: 4 for float32, 2 for bfloat16 and "
                  "float16, 1 for int8, 0.5 for int4 (see models.BYTES_PER_PARAM)")
    return [
        Case("SmolVLM-256M in bfloat16", (256, "bfloat16"), models.weights_gib(256, "bfloat16"),
             bytes_hint),
        Case("SmolVLM-256M in float32", (256, "float32"), models.weights_gib(256, "float32"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in float16", (3755, "float16"), models.weights_gib(3755, "float16"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in int4 (QLoRA)", (3755, "int4"), models.weights_gib(3755, "int4"),
             bytes_hint),
        Case("SmolVLM-500M in int8", (507, "int8"), models.weights_gib(507, "int8"), bytes_hint),
    ]


def weights_gib_hint(got: Any, params_millions: float, dtype: str) -> str:
    """A hint for a wrong ``weights_gib`` result, chosen by what the number looks like: not
    rounded, rounded the wrong way, gigabytes instead of GiB, millions forgotten, or the wrong
    bytes per parameter. It names the mistake, not the code that fixes it.

    >>> weights_gib_hint(0.476837158203125, 256, "bfloat16")  # doctest: +ELLIPSIS
    'the size is right but not rounded: ...'
    >>> weights_gib_hint(0.51, 256, "bfloat16")  # doctest: +ELLIPSIS
    'that is in gigabytes (10**9 bytes); ...'
    """
    from cotlib import models

    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return (f"return a number (a float), not {type(got).__name__}: formatting the value "
                "as text is for printing only")
    size = params_millions * 1e6 * models.BYTES_PER_PARAM[dtype]
    exact = size / 2**30

    def near(value: float, target: float) -> bool:
        return abs(value - target) <= 1e-9 * max(1.0, abs(target))

    if near(got, exact):
        return ("the size is right but not rounded: the exercise asks for 2 decimals (the "
                "rounding comes last, on the GiB value)")
    found = []
    if any(near(got, v) for f in (1e-6, 1e6) for v in (exact * f, round(exact * f, 2))):
        found.append("params_millions counts millions of parameters: multiply by 1e6 once")
    if near(got, round(exact, 1)) or near(got, round(exact)):
        found.append("rounded to too few decimals: the exercise asks for 2")
    if found:
        return "; or ".join(found)
    if abs(got - exact) < 0.01:
        return ("off in the last decimal: round to the nearest hundredth (cutting the digits "
                "off, as int() or math.floor do, is not rounding)")
    if abs(got - size / 1e9) < 0.01:
        return "that is in gigabytes (10**9 bytes); 1 GiB is 2**30 bytes"
    return ("bytes = parameters x bytes per parameter (4 for float32, 2 for bfloat16 and "
            "float16, 1 for int8, 0.5 for int4: models.BYTES_PER_PARAM); check the number of "
            f"bytes you use for {dtype}")


def check_weights_gib(fn: Callable[[float, str], float]) -> bool:
    """Check a learner's ``weights_gib(params_millions, dtype)`` against
    :func:`cotlib.models.weights_gib`; a wrong number gets :func:`weights_gib_hint`."""
    cases = weights_gib_cases()
    for i, case in enumerate(cases):
        try:
            got = fn(*case.args)
        except Exception:  # run_cases reports it (or "not done yet") with the case's own hint
            continue
        if got != case.expected:
            cases[i] = Case(case.name, case.args, case.expected, weights_gib_hint(got, *case.args))
    return run_cases("weights_gib", fn, cases)


# --------------------------------------------------------------------------------------------
# Notebook 01: a well-formed trace to build cases from
# --------------------------------------------------------------------------------------------

def _wf(summary="plan", caption="a red circle", reasoning="one red object", conclusion="1"):
    return stages.render(summary, caption, reasoning, conclusion)


# --------------------------------------------------------------------------------------------
# Notebook 02: the answer-conditioned prompt
# --------------------------------------------------------------------------------------------

_MC_QUESTION = ("Which color bar is the tallest?\nOptions: A. red B. blue C. green\n"
                "Answer with the option's letter.")


def conditioned_prompt_cases() -> list[Case]:
    """Cases for the notebook 02 exercise ``build_conditioned_text(question, answer) -> str``."""
    from cotlib import teacher

    def case(name: str, question: str, answer: str, hint: str) -> Case:
        return Case(name, (question, answer), teacher.request_text(question, answer), hint)

    return [
        case("a counting question", "How many red objects are there?", "2",
             "Two lines: 'Question: <question>', then 'Standard answer: <answer>'."),
        case("a yes/no question", "Is the blue square above the red circle?", "no",
             "The answer goes after 'Standard answer: ' exactly as given."),
        case("multiple choice (a question of several lines)", _MC_QUESTION, "B",
             "Keep the question's own line breaks; the standard answer is the last line."),
        case("spaces around the inputs", "  What color is the small circle?  ", " purple\n",
             "Strip spaces and newlines around the question and the answer."),
    ]


def _diagnose_prompt(got: object, question: str, answer: str) -> str:
    """Name the first thing wrong with a learner's conditioned text."""
    from cotlib import teacher

    if not isinstance(got, str):
        return f"return a str, not {type(got).__name__}"
    if not got.startswith("Question: "):
        return "start with 'Question: ' (capital Q, colon, one space)"
    if "\nStandard answer: " not in got:
        return "put the answer on its own line starting 'Standard answer: '"
    if got != got.strip():
        return "no spaces or newlines at the very start or end"
    parsed = teacher.parse_request_text(got)
    if parsed.question != question.strip():
        return f"the question part reads {parsed.question!r}, expected {question.strip()!r}"
    if parsed.answer != answer.strip():
        return f"the answer part reads {parsed.answer!r}, expected {answer.strip()!r}"
    return "compare your text with the expected one character by character"


def check_conditioned_prompt(fn: Callable[[str, str], str]) -> bool:
    """Check a learner's ``build_conditioned_text(question, answer)`` against
    :func:`cotlib.teacher.request_text`: the local teacher and the filter read the standard
    answer back from exactly this format, so it must match character for character."""
    from cotlib import teacher

    cases = conditioned_prompt_cases()
    for case in cases:  # the table must round-trip through the library, or the checker is wrong
        parsed = teacher.parse_request_text(case.expected)
        assert (parsed.question, parsed.answer) == tuple(a.strip() for a in case.args), case.name
    title = "build_conditioned_text"
    for case in cases:
        try:
            got = fn(*case.args)
        except NotImplementedError:
            print(f"⏳ {title}: not done yet — write the function above and run this cell "
                  "again. The notebook continues with cotlib's version meanwhile.")
            return False
        except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
            print(f"❌ {title}: case '{case.name}' raised {type(err).__name__}: {err}")
            return False
        if got != case.expected:
            print(f"❌ {title}: case '{case.name}'")
            print(f"   got:      {got!r}")
            print(f"   expected: {case.expected!r}")
            print(f"   fix: {_diagnose_prompt(got, *case.args)}")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
    print(f"✅ {title}: all {len(cases)} cases pass — the local teacher will read your standard "
          "answer correctly")
    return True


# ============================================================================================
# Mechanism exercises (issue 22): parsing the stages (01), completion-only labels (04), the LoRA
# forward pass (05), decoding one stage on a cache and the pairwise knockout (06). Each checker
# runs the learner's function against the library's on the tiny models and, for a miss, prints
# the failing case, what came back, what was expected and a hint — never the solution.
# ============================================================================================

_NOT_DONE = ("not done yet — write the function above and run this cell again. The notebook "
             "continues with cotlib's version meanwhile.")


def _call(title: str, case: str, fn: Callable, *args) -> tuple[bool, Any]:
    """Call a learner's function; report "not done yet" or an exception in one line."""
    try:
        return True, fn(*args)
    except NotImplementedError:
        print(f"⏳ {title}: {_NOT_DONE}")
    except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
        last = traceback.extract_tb(err.__traceback__)[-1]
        print(f"❌ {title}: case '{case}' raised {type(err).__name__}: {err} "
              f"(line {last.lineno}: {last.line!r})")
    return False, None


def _miss(title: str, case: str, got: Any, expected: Any, hint: str = "",
          inputs: str = "") -> bool:
    print(f"❌ {title}: case '{case}'")
    if inputs:
        print(f"   input:    {inputs}")
    print(f"   got:      {got}")
    print(f"   expected: {expected}")
    if hint:
        print(f"   hint: {hint}")
    return False


# --------------------------------------------------------------------------------------------
# Notebook 01: split a staged answer into its stages
# --------------------------------------------------------------------------------------------

def split_stages_cases() -> list[Case]:
    """Cases for notebook 01's ``split_stages(text) -> dict``; expected = ``stages.parse``."""
    good = _wf()

    def case(name: str, text: str, hint: str) -> Case:
        return Case(name, (text,), stages.parse(text).stages, hint)

    return [
        case("a good trace", good, "Find each opening tag, take the text up to its closing tag, "
             "and strip spaces around it."),
        case("lower-case tags", good.lower(), "Compare tag names case-insensitively, and store "
             "them upper-case (SUMMARY, not summary)."),
        case("spaces inside the tags", good.replace("<CAPTION>", "< CAPTION >")
             .replace("</CAPTION>", "</ CAPTION>"),
             "Allow spaces or tabs inside the brackets: '< CAPTION >', '</ CAPTION>'."),
        case("cut off in REASONING", good.split("</REASONING>")[0],
             "A stage that never closes runs to the end of the text (a generation cut off)."),
        case("a stage opened while another is open",
             "<SUMMARY> plan <CAPTION> a red circle </CAPTION>",
             "An opening tag ends a stage that is still open: SUMMARY is ' plan'."),
        case("stages out of order",
             "<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><CONCLUSION>1</CONCLUSION>",
             "Keep the stages in the order they appear; do not sort them."),
        case("a repeated stage", _wf() + "\n<CONCLUSION> 7 </CONCLUSION>",
             "A stage that appears again keeps its first text."),
        case("a stray closing tag", "<SUMMARY> plan </CAPTION> more </SUMMARY>",
             "A closing tag closes only the stage that is open; any other one is ordinary text."),
        case("other tags and chatter", "Sure! <SUMMARY> use <b>bold</b>, x < y > z </SUMMARY> "
             "bye", "Only the four stage names are tags; anything else (<b>, x < y > z, text "
             "outside the stages) is left alone."),
        case("no tags at all", "just an answer", "No stages found: return an empty dict."),
    ]


def check_split_stages(fn: Callable[[str], dict]) -> bool:
    """Check a learner's ``split_stages(text)`` against ``stages.parse(text).stages``."""
    title = "split_stages"
    cases = split_stages_cases()
    for case in cases:
        ok, got = _call(title, case.name, fn, *case.args)
        if not ok:
            return False
        if not isinstance(got, dict):
            return _miss(title, case.name, f"a {type(got).__name__}", "a dict {stage: text}",
                         "return a dict", repr(case.args[0])[:100])
        if got != case.expected or list(got) != list(case.expected):
            return _miss(title, case.name, repr(got), repr(case.expected), case.hint,
                         repr(case.args[0])[:160])
    print(f"✅ {title}: all {len(cases)} cases pass — the same stages as stages.parse")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 04: completion-only labels, as the vision collator makes them
# --------------------------------------------------------------------------------------------

def _tiny_rows(n: int = 3) -> list[dict]:
    """A few training rows of different lengths (rendered from the shipped training tasks)."""
    from cotlib import train

    rows = train.synthetic_traces()
    picks = sorted(range(len(rows)), key=lambda i: len(rows[i]["completion"][0]["content"][0]
                                                         ["text"]))
    chosen = [picks[0], picks[len(picks) // 2], picks[-1]][:n]
    return [dict(rows[i]) for i in chosen]


def completion_labels_reference(collator, processor, rows: list[dict]) -> dict:
    """Run ``collator`` on ``rows`` and return what the exercise needs: the batch's ids and
    mask, each row's prompt length (where the collator's completion starts), the image and
    end-of-turn token ids, whether anything after the end-of-turn token is trained, and the
    collator's labels."""
    import copy

    batch = collator([copy.deepcopy(r) for r in rows])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    tok = getattr(processor, "tokenizer", processor)
    image_id = getattr(processor, "image_token_id", None)
    if image_id is None:
        image_id = tok.convert_tokens_to_ids(processor.image_token)
    end_id = tok.eos_token_id
    prompt_lengths, after_end = [], False
    for i in range(ids.shape[0]):
        trained = (labels[i] != -100).nonzero().flatten().tolist()
        prompt_lengths.append(trained[0] if trained else int(mask[i].sum()))
        ends = [p for p in range(prompt_lengths[-1], ids.shape[1]) if ids[i, p] == end_id]
        if ends and trained and trained[-1] > ends[0]:
            after_end = True
    return {"input_ids": ids, "attention_mask": mask, "prompt_lengths": prompt_lengths,
            "image_token_id": int(image_id), "end_token_id": None if after_end else int(end_id),
            "labels": labels, "tokenizer": tok}


def check_completion_labels(fn: Callable, collator=None, processor=None,
                            rows: list[dict] | None = None) -> bool:
    """Check a learner's ``completion_labels(input_ids, attention_mask, prompt_lengths,
    image_token_id, end_token_id)`` against the labels ``collator`` makes (default: TRL's
    ``DataCollatorForVisionLanguageModeling`` with ``completion_only_loss=True`` on both tiny
    model families). ``end_token_id`` is passed as ``None`` when the collator trains tokens
    after the end-of-turn token (TRL does: the template's newline), else as that token's id."""
    import torch

    title = "completion_labels"
    setups = []
    if collator is not None:
        setups.append(("your notebook's collator", collator, processor))
    else:
        from transformers import AutoProcessor
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        from cotlib import models

        for family in COURSE_FAMILIES:
            proc = AutoProcessor.from_pretrained(models.tiny(family))
            setups.append((f"tiny {family}", DataCollatorForVisionLanguageModeling(
                proc, completion_only_loss=True), proc))
    rows = rows or _tiny_rows()
    for name, coll, proc in setups:
        ref = completion_labels_reference(coll, proc, rows)
        ids, mask = ref["input_ids"], ref["attention_mask"]
        before = ids.clone()
        args = (ids, mask, list(ref["prompt_lengths"]), ref["image_token_id"],
                ref["end_token_id"])
        case = f"{name}: {ids.shape[0]} rows of {[int(m.sum()) for m in mask]} tokens"
        ok, got = _call(title, case, fn, *args)
        if not ok:
            return False
        if not torch.equal(ids, before):
            return _miss(title, case, "input_ids changed", "input_ids untouched",
                         "labels = input_ids.clone() first; masking input_ids itself would "
                         "corrupt what the model reads")
        if not isinstance(got, torch.Tensor) or got.shape != ids.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return _miss(title, case, f"{shape}", f"a tensor of shape {tuple(ids.shape)}",
                         "return one label per input token, same shape as input_ids")
        expected = ref["labels"]
        if torch.equal(got.long(), expected):
            continue
        row, pos = [int(v) for v in (got.long() != expected).nonzero()[0]]
        tok = ref["tokenizer"]
        token = tok.convert_ids_to_tokens(int(ids[row, pos]))
        where = ("padding" if mask[row, pos] == 0 else
                 "an image token" if ids[row, pos] == ref["image_token_id"] else
                 "the prompt" if pos < ref["prompt_lengths"][row] else
                 "after the end-of-turn token" if ref["end_token_id"] is not None and
                 ref["end_token_id"] in ids[row, ref["prompt_lengths"][row]:pos].tolist() else
                 "the completion")
        hints = {
            "padding": "padding (attention_mask == 0) is never trained: -100",
            "an image token": "image tokens are part of the prompt: -100",
            "the prompt": "each row has its own prompt length: mask labels[i, :prompt_lengths[i]]",
            "after the end-of-turn token": "when end_token_id is given, train the end-of-turn "
                                           "token itself but nothing after it",
            "the completion": "completion tokens keep their own id as the label (the end-of-turn "
                              "token too, and what follows it when end_token_id is None)",
        }
        return _miss(title, case, f"label {int(got[row, pos])} at row {row}, position {pos}",
                     f"{int(expected[row, pos])} — the token there is {token!r}, in {where}",
                     hints[where])
    after = ("nothing after the end-of-turn token is trained" if ref["end_token_id"] is not None
             else "the token(s) the chat template writes after the end-of-turn token are trained "
                  "too")
    print(f"✅ {title}: same labels as the collator ({len(setups)} batch"
          f"{'es' if len(setups) > 1 else ''}); with this collator {after}")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 05: the LoRA forward pass
# --------------------------------------------------------------------------------------------

def tiny_lora_model(family: str = "idefics3", r: int = 4, alpha: int = 8, seed: int = 0):
    """A tiny model with a LoRA adapter (``cotlib.train.lora_config``) whose B matrices (and
    the adapted layers' biases) are random instead of zero, so every term of the output
    matters; in eval mode (no dropout)."""
    import warnings

    import torch
    from peft import get_peft_model

    from cotlib import models, train

    model, _ = models.load(models.tiny(family), dtype="float32")
    with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, train.lora_config(r=r, alpha=alpha))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or (name.endswith("base_layer.bias")):  # bias: often all 0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return peft_model.eval()


def _lora_layers(peft_model) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in peft_model.named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]


def check_lora_forward(fn: Callable, peft_model=None) -> bool:
    """Check a learner's ``lora_forward(x, W, b, A, B, alpha, r)`` against PEFT's LoRA layers on
    the tiny models of both families (random B, so the detour matters; ``b`` may be ``None``):
    each layer's output for a random input."""
    import torch


    title = "lora_forward"
    peft_models = [peft_model] if peft_model is not None else [
        tiny_lora_model(family) for family in COURSE_FAMILIES]
    picks = []
    for pm in peft_models:  # first, middle and last adapted layer (Qwen2's q/k/v have a bias)
        layers = _lora_layers(pm)
        with_bias = [pair for pair in layers if pair[1].base_layer.bias is not None]
        picks += [layers[0], *with_bias[:1], layers[-1]]
    gen = torch.Generator().manual_seed(1)
    for name, layer in picks:
        base = layer.base_layer
        x = torch.randn(2, 3, base.in_features, generator=gen)
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        r = A.shape[0]
        alpha = layer.scaling["default"] * r
        case = (f"{name.split('model.', 1)[-1]} (in {base.in_features}, "
                f"out {base.out_features}, r {r})")
        with torch.no_grad():
            expected = layer(x)
            ok, got = _call(title, case, fn, x, base.weight, base.bias, A, B, alpha, r)
        if not ok:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return _miss(title, case, f"{shape}", f"shape {tuple(expected.shape)}",
                         "x is (..., in): x @ W.T is (..., out); A is (r, in), B is (out, r)")
        got = got.detach().float()
        if torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
            continue
        with torch.no_grad():
            plain = torch.nn.functional.linear(x, base.weight, base.bias)
            detour = x @ A.T @ B.T
        diff = (got - expected).abs().max().item()
        hint = "h = W x + b + (alpha / r) · B A x"
        for guess, why in [
            (plain, "that is the frozen layer alone: add the low-rank detour B A x"),
            (plain + detour, "the detour is scaled by alpha / r"),
            (plain + alpha * detour, "scale by alpha / r, not alpha"),
            (plain + detour / r, "scale by alpha / r, not 1 / r"),
            (plain - (base.bias if base.bias is not None else 0)
             + layer.scaling["default"] * detour,
             "keep the frozen layer's bias b (when it has one)"),
        ]:
            if torch.allclose(got, guess, atol=1e-5, rtol=1e-4):
                hint = why
                break
        return _miss(title, case, f"an output that differs by up to {diff:.3g}",
                     "PEFT's layer output (max difference below 1e-5)", hint)
    print(f"✅ {title}: matches PEFT's LoRA layers on {len(picks)} modules")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 06: decode one stage on a cache
# --------------------------------------------------------------------------------------------

def _stage_text(tok, ids: list[int], limit: int = 70) -> str:
    text = tok.decode(ids, skip_special_tokens=True)
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def check_decode_stage(fn: Callable, model, processor, image, question: str,
                       budgets: Iterable[int | None] = (None, 3)) -> bool:
    """Check a learner's greedy ``decode_one_stage(state, max_new_tokens) -> (token_ids,
    stop)`` against :func:`cotlib.infer.decode_stage`, stage by stage on the same cache: each of
    the four stages at its default budget (a model that writes tags stops at them), then
    SUMMARY with a budget of 3 tokens."""
    from cotlib import infer

    title = "decode_one_stage"
    tok = getattr(processor, "tokenizer", processor)
    cases: list[tuple[str, int, int | None]] = [
        (stage, i, None) for i, stage in enumerate(stages.STAGES)]
    cases += [("SUMMARY", 0, b) for b in budgets if b is not None]
    state = None
    for stage, index, budget in cases:
        if budget is not None or index == 0:
            state = infer.start(model, processor, [image], [question])
        limit = budget if budget is not None else infer.DEFAULT_MAX_TOKENS[stage]
        mine = state.repeat(1)  # a copy: its own cache
        name = f"{stage} with max_new_tokens={limit}"
        ok, got = _call(title, name, fn, mine, limit)
        if not ok:
            return False
        ref = infer.decode_stage(state, max_new_tokens=limit)[0]
        want = (list(ref.token_ids), ref.stop)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return _miss(title, name, repr(got)[:80], "a pair (token_ids, stop)",
                         "return (list of chosen token ids, 'tag' | 'length' | 'eos')")
        ids, stop = list(got[0]), got[1]
        if (ids, stop) == want:
            continue
        got_s = f"{len(ids)} tokens {_stage_text(tok, ids)}, stop {stop!r}"
        want_s = f"{len(want[0])} tokens {_stage_text(tok, want[0])}, stop {want[1]!r}"
        first = next((k for k, (a, b) in enumerate(zip(ids, want[0])) if a != b), None)
        if ids and want[0] and ids[0] != want[0][0]:
            hint = ("the first token differs: feed the stage's opening tokens "
                    "(state.rows[0].pending) before choosing, then take argmax of state.logits[0]")
        elif first is not None:
            hint = (f"token {first} differs: after choosing a token, feed it "
                    "(infer.feed(state, [[token]])) before reading state.logits again")
        elif ids == want[0]:
            hint = ("right tokens, wrong reason: 'tag' if the closing tag appeared, else "
                    "'length' at the budget ('tag' wins when both happen on the same token), "
                    "'eos' for the end-of-answer token")
        elif len(ids) < len(want[0]):
            hint = ("you stopped too early: stop when the decoded text contains the closing "
                    f"tag {stages.close_tag(stage)!r}, or after max_new_tokens tokens")
        elif want[1] == infer.TAG:
            hint = (f"decode the tokens so far after each new one and stop as soon as the "
                    f"closing tag {stages.close_tag(stage)!r} is in the text — keep the token "
                    "that completed it")
        else:
            hint = "stop after exactly max_new_tokens tokens (count them before feeding the next)"
        return _miss(title, name, got_s, want_s, hint)
    print(f"✅ {title}: the same tokens and stops as infer.decode_stage in all {len(cases)} "
          "cases")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 06: the pairwise knockout
# --------------------------------------------------------------------------------------------

def knockout_cases() -> list[Case]:
    """Cases for notebook 06's ``knockout(scores, closed) -> (winner, matches)``; the expected
    values come from :func:`cotlib.search.knockout` with a fixed-score scorer."""
    from cotlib import search

    def case(name: str, scores: list[float], closed: list[bool] | None, hint: str) -> Case:
        closed = closed if closed is not None else [True] * len(scores)
        cands = [search.Candidate(i, "CAPTION", f"c{i}", [], "tag" if c else "length", c)
                 for i, c in enumerate(closed)]
        scorer = search.ScoreScorer("fixed", lambda c, ctx: scores[c.index])
        winner, comps = search.knockout(search.JudgeContext("CAPTION", "q", ""), cands, scorer)
        return Case(name, (list(scores), list(closed)),
                    (winner, [(m.round, m.a, m.b, m.winner) for m in comps]), hint)

    return [
        case("four candidates", [0.1, 0.7, 0.4, 0.2], None,
             "Round 1 pairs 0-1 and 2-3; the winners meet in round 2."),
        case("one candidate", [0.3], None, "A single candidate wins without any match."),
        case("five candidates (odd)", [0.5, 0.2, 0.1, 0.9, 0.3], None,
             "With an odd number the last one gets a bye: it goes on to the next round without "
             "a match (and is not recorded as one)."),
        case("three candidates", [0.2, 0.1, 0.9], None,
             "Pairs are taken in order (0-1), the odd one (2) waits for round 2."),
        case("six candidates (odd in round 2)", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], None,
             "Round 2 has three players: pair the first two, the third gets a bye."),
        case("a tie", [0.5, 0.5, 0.2, 0.1], None,
             "On a tie the first candidate of the pair wins (a strict > for the second)."),
        case("all tied", [1.0, 1.0, 1.0, 1.0, 1.0], None,
             "On a tie the first candidate of the pair wins."),
        case("the best did not close its stage", [0.9, 0.1, 0.3], [False, True, True],
             "A candidate that closed its stage beats one that did not, whatever the scores."),
        case("none closed", [0.2, 0.6, 0.1], [False, False, False],
             "When both or neither closed, the scores decide."),
    ]


def check_knockout(fn: Callable) -> bool:
    """Check a learner's ``knockout(scores, closed) -> (winner, [(round, a, b, winner), …])``
    against :func:`cotlib.search.knockout` on fixed scores."""
    title = "knockout"
    cases = knockout_cases()
    for case in cases:
        ok, got = _call(title, case.name, fn, *(list(a) for a in case.args))
        if not ok:
            return False
        try:
            got = (int(got[0]), [tuple(int(v) for v in m) for m in got[1]])
        except Exception:
            return _miss(title, case.name, repr(got)[:80], "(winner, [(round, a, b, winner), …])",
                         "return the winner's index and the list of matches in play order",
                         _short(case.args))
        if got != case.expected:
            hint = case.hint
            if got[0] == case.expected[0]:
                hint = "right winner, but the matches differ: " + case.hint
            return _miss(title, case.name, repr(got), repr(case.expected), hint,
                         _short(case.args))
    print(f"✅ {title}: all {len(cases)} cases pass — the same matches as search.knockout")
    return True


def check_lora_merge(fn: Callable, peft_model=None) -> bool:
    """Check a learner's ``lora_merge(W, A, B, alpha, r) -> W'`` (the adapter folded into the
    frozen weight) against PEFT's ``W + get_delta_weight()`` on the tiny models' LoRA layers."""
    import torch


    title = "lora_merge"
    peft_models = [peft_model] if peft_model is not None else [
        tiny_lora_model(family) for family in COURSE_FAMILIES]
    picks = []
    for pm in peft_models:
        layers = _lora_layers(pm)
        picks += [layers[0], layers[-1]]
    for name, layer in picks:
        base = layer.base_layer
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        r = A.shape[0]
        alpha = layer.scaling["default"] * r
        case = f"{name.split('model.', 1)[-1]} (W {tuple(base.weight.shape)}, r {r})"
        with torch.no_grad():
            expected = base.weight + layer.get_delta_weight("default")
            ok, got = _call(title, case, fn, base.weight, A, B, alpha, r)
        if not ok:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return _miss(title, case, f"{shape}", f"shape {tuple(expected.shape)} (out × in)",
                         "B is (out, r) and A is (r, in): B @ A is (out, in), like W")
        got = got.detach().float()
        if torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
            continue
        with torch.no_grad():
            delta = B @ A
        hint = "W' = W + (alpha / r) · B A"
        for guess, why in [(delta * alpha / r, "add the frozen weight W: merging keeps it"),
                           (base.weight + delta, "the detour is scaled by alpha / r"),
                           (base.weight + alpha * delta, "scale by alpha / r, not alpha"),
                           (base.weight + (delta * alpha / r).T,
                            "the update is transposed: B @ A is (out, in), like W")]:
            if guess.shape == got.shape and torch.allclose(got, guess, atol=1e-5, rtol=1e-4):
                hint = why
                break
        diff = (got - expected).abs().max().item()
        return _miss(title, case, f"a weight that differs by up to {diff:.3g}",
                     "PEFT's merged weight", hint)
    print(f"✅ {title}: the same merged weights as PEFT on {len(picks)} modules — x @ W'.T + b "
          "now gives the adapted output in one matrix product")
    return True


# --------------------------------------------------------------------------------------------
# Notebook 03: the answer check, scored against the local teacher's injection log
# --------------------------------------------------------------------------------------------

_ANSWER_HINTS = {
    "multiple_choice": "for multiple choice an answer may be the option's letter or its text: "
                       "answers_match takes the task's choices and answer_letter",
    "reworded": "a real teacher words its answer freely ('Three.', 'The answer is (B).'): "
                "compare meanings with cotlib.normalize.answers_match, not strings",
    "clean": "this trace gives the standard answer: compare with answers_match (the grader "
             "evaluation uses) and return None when it matches",
    "wrong": "the CONCLUSION gives another answer than the task's: return 'answer:wrong' when "
             "answers_match says no",
    "no_conclusion": "no CONCLUSION (a malformed trace or a refusal): return None — check_format "
                     "and check_refusal name those traces",
    "no_answer": "imported data may come with no task (None) or no standard answer (None or ''): "
                 "return None, there is nothing to compare with",
    "reason": "name the reason exactly 'answer:wrong' (family:detail), so the report counts it "
              "with the library's",
}


def _reason(result: Any) -> Any:
    """A check's result without its detail: ``("answer:wrong", "...")`` -> ``"answer:wrong"``."""
    return result[0] if isinstance(result, tuple) and result else result


_ANSWER_CASES: dict[tuple[int, int], tuple[tuple, ...]] = {}  # built once per process


def answer_check_cases(n_tasks: int = 48, seed: int = 11) -> tuple[tuple, ...]:
    """The checker's traces: ``(name, record, task, injected, kind)`` per case.

    ``n_tasks`` traces come from the local teacher with faults switched on (``injected`` is the
    fault its log records for the trace: "clean", "malformed", "wrong_answer", "refusal"); a few
    more are clean traces reworded the way a real teacher writes, a trace cut before its
    CONCLUSION, and traces of tasks with no standard answer (``injected`` None for those).
    """
    if (n_tasks, seed) in _ANSWER_CASES:
        return _ANSWER_CASES[n_tasks, seed]
    import dataclasses
    import tempfile
    from pathlib import Path

    from cotlib import filtering, synth, teacher, teacher_server

    tasks = synth.make_tasks(n_tasks, seed=seed, mc_fraction=0.4)
    faults = teacher_server.Faults(rate_malformed=0.15, rate_wrong_answer=0.2, rate_refusal=0.1,
                                   seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "traces.jsonl"
        with teacher_server.LocalTeacher(faults) as server:
            config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                           concurrency=1)
            teacher.run_generation(tasks, out, config, progress=False)
            injections = server.injections
        records = filtering.read_traces(out)
    by_id = {t.id: t for t in tasks}
    injected = filtering.injected_kinds(records, injections)
    cases = []
    for record, kind in zip(records, injected):
        task = by_id[record["task_id"]]
        has_conclusion = bool(stages.parse(record["text"]).stages.get("CONCLUSION"))
        what = ("wrong" if kind == "wrong_answer" else "no_conclusion" if not has_conclusion
                else "multiple_choice" if task.choices else "clean")
        cases.append((f"{task.id}, injected: {kind}", record, task, kind, what))
    clean = [(r, by_id[r["task_id"]]) for r, k in zip(records, injected) if k == "clean"]

    def reword(task) -> str:
        if task.choices:
            return f"The answer is ({task.answer_letter}) {task.answer}."
        if task.answer in ("yes", "no"):
            return f"{task.answer.capitalize()}, it is."
        if task.answer.isdigit():
            return f"There are {task.answer} in total."
        return f"The answer is {task.answer.capitalize()}."

    for record, task in clean[:6]:
        text = record["text"].replace(f"<CONCLUSION> {teacher.standard_answer(task)} ",
                                      f"<CONCLUSION> {reword(task)} ")
        cases.append((f"{task.id}, reworded: {reword(task)!r}", {**record, "text": text}, task,
                      None, "multiple_choice" if task.choices else "reworded"))
    record, task = clean[0]
    cut = record["text"].split("<CONCLUSION>")[0]
    cases.append((f"{task.id}, cut off before the CONCLUSION", {**record, "text": cut}, task,
                  None, "no_conclusion"))
    record, task = clean[1]
    cases.append((f"{task.id}, imported: no standard answer", record,
                  dataclasses.replace(task, answer=""), None, "no_answer"))
    cases.append((f"{task.id}, imported: no task", record, None, None, "no_answer"))
    _ANSWER_CASES[n_tasks, seed] = tuple(cases)
    return _ANSWER_CASES[n_tasks, seed]


def check_answer_check(fn: Callable, n_tasks: int = 48, seed: int = 11) -> bool:
    """Check a learner's ``answer_check(record, task)`` (``"answer:wrong"`` or None) against
    ``filtering.check_answer`` on traces from the local teacher with injected faults, explain the
    first disagreement, and score the learner's check against the teacher's injection log."""
    from cotlib import filtering, teacher

    title = "answer check"
    cases = answer_check_cases(n_tasks, seed)
    results, miss = [], None
    for name, record, task, kind, what in cases:
        try:
            got = fn(record, task)
        except NotImplementedError:
            print(f"⏳ {title}: {_NOT_DONE}")
            return False
        except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
            last = traceback.extract_tb(err.__traceback__)[-1]
            print(f"❌ {title}: case '{name}' raised {type(err).__name__}: {err} "
                  f"(line {last.lineno}: {last.line!r})")
            print(f"   hint: {_ANSWER_HINTS[what]}")
            return False
        got, expected = _reason(got), _reason(filtering.check_answer(record, task))
        results.append((kind, got))
        if got != expected and miss is None:
            miss = (name, record, task, what, got, expected)
    if miss is None:
        print(f"✅ {title}: the same verdict as filtering.check_answer on all {len(cases)} traces")
    else:
        name, record, task, what, got, expected = miss
        conclusion = stages.parse(record["text"]).stages.get("CONCLUSION")
        standard = teacher.standard_answer(task) if task is not None and task.answer else None
        if standard and task.choices:
            standard = f"{standard} ({task.answer})"
        hint = _ANSWER_HINTS[what]
        if got is not None and expected is not None:
            hint = _ANSWER_HINTS["reason"]
        _miss(title, name, repr(got), repr(expected), hint,
              f"CONCLUSION {conclusion!r}, standard answer {standard!r}")
    wrong = [got for kind, got in results if kind == "wrong_answer"]
    clean = [got for kind, got in results if kind == "clean"]
    print(f"   against the injection log: flagged {sum(g == 'answer:wrong' for g in wrong)} of "
          f"{len(wrong)} injected wrong answers (a perfect check: all) and "
          f"{sum(g is not None for g in clean)} of {len(clean)} clean traces (a perfect check: "
          "none)")
    return miss is None
