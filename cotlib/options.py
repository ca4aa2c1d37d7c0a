"""Command-line options built from dataclass fields: each setting is declared once, in its
dataclass (type and default), and a command line only says which fields it offers, under which
flag, with which help.

An option is a tuple ``(flag, field, help)`` or ``(flag, field, help, more)``. ``field`` is a
field's name or a dotted path into a nested dataclass (``"train.epochs"`` on
:class:`cotlib.experiment.ExperimentConfig`); ``more`` holds argparse arguments beyond the ones
the field's type gives (``choices``, ``metavar``, ``dest``...; the dest is argparse's, from the
flag, unless ``more`` names one). :func:`argument` maps a type to argparse: ``bool`` a flag,
``bool | None`` an ``on``/``off`` switch (``bool | str`` also ``auto``; the bare flag: on), a list
one or more values, ``X | None`` an ``X``, a ``Literal`` its choices. :func:`add_options` adds the
options with the template's values as defaults; with ``unset=True`` each parses to ``None``
(a preset chosen later keeps its value) and the help shows the template's value.
:func:`from_args` builds the dataclass back: a ``replace`` of the template (of a nested one for a
dotted path) with every option that is not ``None``.

Why not transformers' ``HfArgumentParser`` (TRL's ``TrlParser``)? It adds an option for every
field, named after it (``--output_dir``, ``--timeout_s``), so the documented flags (``--output``,
``--timeout``, ``cotlib demo --tasks``) would survive only as aliases listed next to the new names;
it fails on a field it cannot type (``TrainSettings.extra``, a nested ``ExperimentConfig.train``),
and it cannot leave an option unset so that a preset's value stays (``cotlib demo --fast``).

>>> from dataclasses import dataclass, field
>>> from typing import Literal
>>> @dataclass
... class Recipe:
...     epochs: float = 8.0
...     tags: list[str] | None = None
>>> @dataclass
... class Run:
...     steps: int | None = None
...     fast: bool = False
...     tiled: bool | None = None
...     mode: Literal["cot", "direct"] = "cot"
...     recipe: Recipe = field(default_factory=Recipe)
>>> opts = [("--steps", "steps", "optimizer steps"), ("--fast", "fast", "small settings"),
...         ("--tiled", "tiled", "tiles"), ("--mode", "mode", "variant"),
...         ("--epochs", "recipe.epochs", "passes"), ("--tag", "recipe.tags", "labels")]
>>> p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
>>> add_options(p, Run(), opts)
>>> from_args(p.parse_args(["--steps", "3", "--tiled", "off", "--epochs", "2", "--tag", "a",
...                         "b"]), Run(), opts)
Run(steps=3, fast=False, tiled=False, mode='cot', recipe=Recipe(epochs=2.0, tags=['a', 'b']))
>>> from_args(p.parse_args([]), Run(), opts) == Run()
True
>>> "passes (default: 8.0)" in p.format_help()
True
>>> q = argparse.ArgumentParser()
>>> add_options(q, Run(), opts, unset=True)
>>> args = q.parse_args(["--fast"])
>>> args.fast, args.epochs
(True, None)
>>> from_args(args, Run(recipe=Recipe(epochs=1.0)), opts).recipe.epochs  # the template's stays
1.0
"""

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

#: ``(flag, field or dotted path, help)``, optionally with a dict of further argparse arguments.
Option = tuple[str, str, str] | tuple[str, str, str, dict[str, Any]]

_ON_OFF = {"on": True, "off": False}
_SHOWN = {True: "on", False: "off"}


def on_off(text: str) -> bool:
    """``on``/``off`` as ``True``/``False`` (an ``argparse`` type)."""
    if text not in _ON_OFF:
        raise argparse.ArgumentTypeError(f"{text!r}: use on or off")
    return _ON_OFF[text]


def on_off_auto(text: str) -> bool | str:
    """``on``/``off``/``auto`` as ``True``/``False``/``"auto"`` (an ``argparse`` type)."""
    if text == "auto":
        return "auto"
    if text not in _ON_OFF:
        raise argparse.ArgumentTypeError(f"{text!r}: use on, off or auto")
    return _ON_OFF[text]


def argument(hint: Any, *, unset: bool = False) -> dict[str, Any]:
    """The argparse arguments a field's type gives (``unset``: a plain ``bool`` is a switch too,
    so that ``off`` can override a preset's ``True``).

    >>> argument(int | None), argument(list[str] | None)
    ({'type': <class 'int'>}, {'type': <class 'str'>, 'nargs': '+'})
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if hint is bool and not unset:
        return {"action": "store_true"}
    if bool in kinds:  # bool | None, bool | str (auto)
        auto = str in kinds
        return {"type": on_off_auto if auto else on_off, "nargs": "?", "const": True,
                "metavar": "{auto,on,off}" if auto else "{on,off}"}
    if typing.get_origin(kinds[0]) is list:
        return {"type": typing.get_args(kinds[0])[0], "nargs": "+"}
    if typing.get_origin(kinds[0]) is typing.Literal:
        choices = typing.get_args(kinds[0])
        return {"type": type(choices[0]), "choices": choices}
    return {"type": kinds[0]}


def field_hint(cls: type, path: str) -> Any:
    """The type hint of the field at the dotted ``path`` of dataclass ``cls``."""
    *outer, name = path.split(".")
    for part in outer:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[name]


def field_value(template: Any, path: str) -> Any:
    """The value at the dotted ``path`` of an instance, or of a dataclass its default
    (:data:`dataclasses.MISSING` for a required field; a nested default's own value)."""
    for part in path.split("."):
        if isinstance(template, type):
            found = {f.name: f for f in dataclasses.fields(template)}[part]
            template = (found.default if found.default_factory is dataclasses.MISSING
                        else found.default_factory())
        else:
            template = getattr(template, part)
    return template


def _dest(option: Option) -> str:
    more = option[3] if len(option) > 3 else {}
    return more.get("dest") or option[0].lstrip("-").replace("-", "_")


def add_options(parser: argparse.ArgumentParser, template: Any,
                options: Sequence[Option], *, unset: bool = False,
                show_defaults: bool = False) -> None:
    """Add ``options`` to ``parser`` with the types of ``template``'s fields (an instance or a
    dataclass, whose fields without a default become required options). The default is the
    template's value, or with ``unset`` ``None``; ``unset`` or ``show_defaults`` write the
    template's value into the help (for parsers without ``ArgumentDefaultsHelpFormatter``),
    unless the help already says ``(default: ...)``."""
    cls = template if isinstance(template, type) else type(template)
    for flag, path, text, *rest in options:
        more = dict(rest[0]) if rest else {}
        default = field_value(template, path)
        kwargs = argument(field_hint(cls, path), unset=unset)
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = None if unset else default
            flag_only = kwargs.get("action") == "store_true"
            if (unset or show_defaults) and not flag_only and "(default:" not in text:
                switch = kwargs.get("type") in (on_off, on_off_auto)
                shown = _SHOWN.get(default, default) if switch else default
                text = f"{text} (default: {str(shown).replace('%', '%%')})"
        parser.add_argument(flag, **({"dest": _dest((flag, path, text, more)), "help": text}
                                     | kwargs | more))


def from_args(args: argparse.Namespace, template: Any, options: Sequence[Option]) -> Any:
    """``template`` (an instance, or a dataclass to instantiate) with each option's parsed
    value, nested dataclasses replaced along a dotted path; a ``None`` keeps the template's."""
    values = {option[1]: getattr(args, _dest(option)) for option in options}
    if isinstance(template, type):  # required fields first: the constructor needs them
        top = {p: values.pop(p) for p in list(values) if "." not in p and values[p] is not None}
        template = template(**top)
    for path, value in values.items():
        if value is not None:
            template = _replace(template, path.split("."), value)
    return template


def _replace(obj: Any, parts: list[str], value: Any) -> Any:
    inner = value if len(parts) == 1 else _replace(getattr(obj, parts[0]), parts[1:], value)
    return dataclasses.replace(obj, **{parts[0]: inner})


def field_options(cls: type, helps: Mapping[str, str], flags: Mapping[str, str] | None = None,
                  more: Mapping[str, dict[str, Any]] | None = None) -> tuple[Option, ...]:
    """One option per field of ``cls``, in field order: ``--field-name`` (or ``flags[name]``),
    ``helps[name]`` (every field needs one) and ``more[name]``.

    >>> @dataclasses.dataclass
    ... class Sizes:
    ...     batch_size: int = 4
    >>> field_options(Sizes, {"batch_size": "rows per step"})
    (('--batch-size', 'batch_size', 'rows per step', {}),)
    """
    flags, more = flags or {}, more or {}
    return tuple((flags.get(f.name, "--" + f.name.replace("_", "-")), f.name, helps[f.name],
                  more.get(f.name, {})) for f in dataclasses.fields(cls))
