"""Notebook 05: the LoRA forward pass and merging an adapter into its weight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cotlib.checks.core import COURSE_FAMILIES, call, checker, miss


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


@checker
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
            ok, got = call(title, case, fn, x, base.weight, base.bias, A, B, alpha, r)
        if not ok:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return miss(title, case, f"{shape}", f"shape {tuple(expected.shape)}",
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
        return miss(title, case, f"an output that differs by up to {diff:.3g}",
                    "PEFT's layer output (max difference below 1e-5)", hint)
    print(f"✅ {title}: matches PEFT's LoRA layers on {len(picks)} modules")
    return True



@checker
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
            ok, got = call(title, case, fn, base.weight, A, B, alpha, r)
        if not ok:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return miss(title, case, f"{shape}", f"shape {tuple(expected.shape)} (out × in)",
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
        return miss(title, case, f"a weight that differs by up to {diff:.3g}",
                    "PEFT's merged weight", hint)
    print(f"✅ {title}: the same merged weights as PEFT on {len(picks)} modules — x @ W'.T + b "
          "now gives the adapted output in one matrix product")
    return True
