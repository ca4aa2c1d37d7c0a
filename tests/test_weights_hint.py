"""Notebook 00's exercise checker (``checks.check_weights_gib``): each wrong answer gets the hint
for its own mistake, and no hint contains the code of the solution."""

from __future__ import annotations

import pytest

from cotlib import checks, models

BYTES = models.BYTES_PER_PARAM

MISTAKES = {  # a wrong weights_gib -> words its hint must contain
    "not rounded": (lambda p, d: p * 1e6 * BYTES[d] / 2**30, "right but not rounded"),
    "bytes rounded, not GiB": (lambda p, d: round(p * 1e6 * BYTES[d], 2) / 2**30,
                               "right but not rounded"),
    "1 decimal": (lambda p, d: round(p * 1e6 * BYTES[d] / 2**30, 1), "too few decimals"),
    "digits cut off": (lambda p, d: int(p * 1e6 * BYTES[d] / 2**30 * 100) / 100,
                       "nearest hundredth"),
    "gigabytes": (lambda p, d: round(p * 1e6 * BYTES[d] / 1e9, 2), "1 GiB is 2**30 bytes"),
    "millions forgotten": (lambda p, d: round(p * BYTES[d] / 2**30, 2), "multiply by 1e6"),
    "always 2 bytes": (lambda p, d: round(p * 1e6 * 2 / 2**30, 2), "bytes you use for float32"),
    "text": (lambda p, d: f"{p * 1e6 * BYTES[d] / 2**30:.2f}", "not str"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_each_mistake_gets_its_own_hint(name, capsys):
    fn, says = MISTAKES[name]
    assert not checks.check_weights_gib(fn)
    out = capsys.readouterr().out
    hint = out.split("hint: ", 1)[1]
    assert says in hint, out
    assert "round(" not in hint and "2**30, 2" not in hint  # names the mistake, not the code


def test_the_library_passes_and_a_crash_keeps_the_case_hint(capsys):
    assert checks.check_weights_gib(models.weights_gib)
    assert not checks.check_weights_gib(lambda p, d: {"float32": 4}[d] * p)
    out = capsys.readouterr().out
    assert "KeyError" in out and "models.BYTES_PER_PARAM" in out
