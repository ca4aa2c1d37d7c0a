"""The exercise checkers: they pass right answers, explain wrong ones, and never crash."""

from __future__ import annotations

import pytest
import torch

from cotlib import checks, stages


def test_cmp_values_and_tensors(capsys):
    assert checks.cmp("x", 1, 1)
    assert not checks.cmp("x", 1, 2)
    assert checks.cmp("t", torch.ones(3), torch.ones(3))
    assert not checks.cmp("t", torch.ones(3), torch.zeros(3))
    assert not checks.cmp("t", torch.ones(3), torch.ones(4))
    out = capsys.readouterr().out
    assert "got 1, expected 2" in out and "shape (3,), expected (4,)" in out


def test_well_formed_checker_accepts_the_library_answer(capsys):
    assert checks.check_is_well_formed(stages.is_valid)
    assert "all 8 cases pass" in capsys.readouterr().out


def test_well_formed_checker_explains_a_case_sensitive_mistake(capsys):
    def naive(text: str) -> bool:
        return all(f"<{s}>" in text and f"</{s}>" in text for s in stages.STAGES)

    assert not checks.check_is_well_formed(naive)
    out = capsys.readouterr().out
    assert "lower-case tags" in out and "hint:" in out


def test_stub_is_reported_as_not_done(capsys):
    def stub(text):
        raise NotImplementedError("Exercise: write this part")

    assert not checks.check_is_well_formed(stub)
    assert "not done yet" in capsys.readouterr().out


def test_learner_exception_is_shown_not_raised(capsys):
    def buggy(text):
        return text[10**9]

    assert not checks.check_is_well_formed(buggy)
    assert "IndexError" in capsys.readouterr().out


def test_conditioned_prompt_checker(capsys):
    from cotlib import teacher

    assert checks.check_conditioned_prompt(teacher.request_text)
    assert not checks.check_conditioned_prompt(lambda q, a: f"Question: {q}\nAnswer: {a}")
    out = capsys.readouterr().out
    assert "all 4 cases pass" in out and "Standard answer" in out


def test_weights_gib_checker_accepts_the_library_and_names_common_mistakes(capsys):
    from cotlib import models

    assert models.weights_gib(256, "bfloat16") == round(256e6 * 2 / 2**30, 2)
    assert checks.check_weights_gib(models.weights_gib)
    # decimal gigabytes instead of GiB: caught, with the hint about 2**30
    assert not checks.check_weights_gib(
        lambda p, d: round(p * 1e6 * models.BYTES_PER_PARAM[d] / 1e9, 2))
    assert "2**30" in capsys.readouterr().out
    # every dtype costing 2 bytes: caught on float32
    assert not checks.check_weights_gib(lambda p, d: round(p * 1e6 * 2 / 2**30, 2))
    assert "float32" in capsys.readouterr().out
    with pytest.raises(ValueError, match="choose one of"):
        models.weights_gib(1, "fp8")
