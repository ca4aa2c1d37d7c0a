"""cotlib.options (command-line options built from dataclass fields) and the five command lines
built with it: cotlib demo, python -m cotlib.train, cotlib generate, cotlib teacher serve,
scripts/pretrain_base.py and scripts/tune_lr.py."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from cotlib import cli, env, experiment, options, teacher_server, train
from cotlib.experiment.config import ExperimentConfig
from cotlib.teacher import cli as teacher_cli

sys.path.insert(0, str(env.REPO_ROOT / "scripts"))
import pretrain_base  # noqa: E402
import tune_lr  # noqa: E402


@dataclass
class Inner:
    rate: float = 0.5
    names: list[str] | None = None


@dataclass
class Sample:
    count: int | None = None
    fast: bool = False
    tiled: bool | None = None
    checkpointing: bool | str = "auto"
    mode: Literal["cot", "direct"] = "cot"
    label: str = "x"
    inner: Inner = field(default_factory=Inner)


SAMPLE_OPTIONS = [("--count", "count", "how many"), ("--fast", "fast", "small settings"),
                  ("--tiled", "tiled", "tiles"), ("--checkpointing", "checkpointing", "memory"),
                  ("--mode", "mode", "variant"), ("--label", "label", "a name", {"dest": "tag"}),
                  ("--rate", "inner.rate", "share in %%"), ("--names", "inner.names", "some")]


def _parser(template: Sample | None = None, **kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    options.add_options(p, template or Sample(), SAMPLE_OPTIONS, **kwargs)
    return p


def test_each_kind_of_field_becomes_its_argparse_option():
    p = _parser()
    args = p.parse_args([])
    assert (args.count, args.fast, args.tiled, args.checkpointing, args.mode, args.tag,
            args.rate, args.names) == (None, False, None, "auto", "cot", "x", 0.5, None)
    args = p.parse_args(["--count", "3", "--fast", "--tiled", "--checkpointing", "off", "--mode",
                         "direct", "--label", "y", "--rate", "0.25", "--names", "a", "b"])
    assert options.from_args(args, Sample(), SAMPLE_OPTIONS) == Sample(
        count=3, fast=True, tiled=True, checkpointing=False, mode="direct", label="y",
        inner=Inner(rate=0.25, names=["a", "b"]))
    assert p.parse_args(["--tiled", "off"]).tiled is False
    assert p.parse_args(["--checkpointing", "auto"]).checkpointing == "auto"
    for bad in (["--tiled", "auto"], ["--tiled", "yes"], ["--mode", "both"], ["--count", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_nested_fields_are_replaced_along_the_dotted_path():
    template = Sample(label="kept", inner=Inner(rate=0.9, names=["z"]))
    args = _parser(template).parse_args(["--rate", "0.1"])
    built = options.from_args(args, template, SAMPLE_OPTIONS)
    assert built == dataclasses.replace(template, inner=Inner(rate=0.1, names=["z"]))
    assert template.inner.rate == 0.9  # the template is not changed
    assert options.field_hint(Sample, "inner.names") == list[str] | None
    assert options.field_value(Sample, "inner.rate") == 0.5
    # a nested default is the outer default's (the experiment's recipe), not the inner class's
    assert options.field_value(ExperimentConfig, "train.epochs") == 8.0 != train.TrainSettings(
        ).epochs


def test_unset_options_keep_the_templates_values_and_help_shows_the_defaults():
    p = _parser(unset=True)
    args = p.parse_args([])
    assert all(getattr(args, d) is None for d in ("count", "fast", "tiled", "rate", "tag"))
    preset = Sample(fast=True, count=7, inner=Inner(rate=0.2))
    assert options.from_args(args, preset, SAMPLE_OPTIONS) == preset
    chosen = options.from_args(p.parse_args(["--fast", "off", "--rate", "0.3"]), preset,
                               SAMPLE_OPTIONS)
    assert chosen == dataclasses.replace(preset, fast=False, inner=Inner(rate=0.3))
    text = " ".join(p.format_help().split())
    assert "how many (default: None)" in text and "small settings (default: off)" in text
    assert "share in % (default: 0.5)" in text and "variant (default: cot)" in text
    assert "memory (default: auto)" in text


def test_a_dataclass_template_makes_required_options():
    @dataclass
    class Needs:
        grid: list[float]
        variant: Literal["a", "b"]
        run: str = "r"

    opts = options.field_options(Needs, {"grid": "rates", "variant": "which", "run": "folder"})
    p = argparse.ArgumentParser()
    options.add_options(p, Needs, opts, show_defaults=True)
    with pytest.raises(SystemExit):
        p.parse_args(["--grid", "1"])
    assert options.from_args(p.parse_args(["--grid", "1", "2e-3", "--variant", "b"]), Needs,
                             opts) == Needs(grid=[1.0, 2e-3], variant="b")
    text = " ".join(p.format_help().split())
    assert "folder (default: r)" in text and "rates (default" not in text


# --------------------------------------------------------------------------------------------
# cotlib demo


@pytest.fixture
def demo_configs(monkeypatch):
    """The ExperimentConfig each `cotlib demo ...` would run (the run itself stubbed out)."""
    monkeypatch.delenv("COTLIB_FAST", raising=False)
    seen: list[ExperimentConfig] = []

    def fake_run(config, run):
        seen.append(config)
        raise experiment.ExperimentError("stopped by the test")

    monkeypatch.setattr(experiment, "run_experiment", fake_run)

    def run(*argv: str) -> ExperimentConfig:
        assert cli.main(["demo", *argv]) == 1
        return seen[-1]

    return run


def test_demo_builds_the_presets_unchanged_without_options(demo_configs, capsys):
    assert demo_configs() == ExperimentConfig()
    assert demo_configs("--fast") == ExperimentConfig.fast()
    assert demo_configs("--full") == ExperimentConfig.full()
    assert "stopped by the test" in capsys.readouterr().err


def test_demo_options_override_the_chosen_preset(demo_configs):
    fast = ExperimentConfig.fast()
    assert demo_configs("--fast", "--tasks", "4", "--epochs", "2", "--beam-tasks", "2") == \
        dataclasses.replace(fast, test_tasks=4, beam_tasks=2,
                            train=dataclasses.replace(fast.train, epochs=2.0))
    full = ExperimentConfig.full()
    assert demo_configs("--full", "--untagged", "off", "--swires", "off", "--learning-rate",
                        "5e-4", "--side-by-side", "--threads", "2", "--test-split", "test") == \
        dataclasses.replace(full, untagged=False, swires=False, side_by_side=True, threads=2,
                            test_split="test",
                            train=dataclasses.replace(full.train, learning_rate=5e-4))
    assert demo_configs("--base", "/tmp/b", "--extra-tasks", "10", "--best-of-n", "0",
                        "--fault-rate", "0.2", "--seed", "3") == ExperimentConfig(
        base="/tmp/b", extra_train_tasks=10, best_of_n=0, fault_rate=0.2, seed=3)


def test_demo_offers_every_scalar_experiment_setting():
    paths = [o[1] for o in cli.demo_options()]
    scalar = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"train"}
    assert {p for p in paths if "." not in p} == scalar
    assert {p for p in paths if "." in p} == {"train.epochs", "train.learning_rate"}
    args = cli.build_parser().parse_args(["demo"])
    assert all(getattr(args, o[0][2:].replace("-", "_")) is None for o in cli.demo_options())


# --------------------------------------------------------------------------------------------
# every entry point's --help shows each option's default


def _demo_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return sub.choices["demo"]


PARSERS = {
    "cotlib demo": _demo_parser,
    "python -m cotlib.train": train.build_parser,
    "cotlib generate": teacher_cli.build_parser,
    "cotlib teacher serve": teacher_server.build_parser,
    "scripts/pretrain_base.py": pretrain_base.build_parser,
    "scripts/tune_lr.py": tune_lr.build_parser,
}


@pytest.mark.parametrize("name", PARSERS)
def test_help_shows_every_options_default(name):
    """Every option that takes a value and is not required shows its default in --help."""
    parser = PARSERS[name]()
    text = "".join(parser.format_help().split())  # no spaces: lines may break at any hyphen
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue
        head = "".join(action.help.replace("%%", "%").split())
        at = text.find(head)
        if at < 0 or "(default:" not in text[at:at + len(head) + len("(default:")]:
            missing.append(action.option_strings[0])
    assert not missing, f"{name}: no default shown for {missing}"
    text = " ".join(parser.format_help().split())
    if name == "cotlib demo":
        defaults = ExperimentConfig()
        assert f"(default: {defaults.train.epochs})" in text
        assert f"peak LoRA learning rate of the CoT adapter (default: " \
               f"{defaults.train.learning_rate})" in text


# --------------------------------------------------------------------------------------------
# the scripts


def test_pretrain_base_records_its_settings_as_before():
    """training_log.json records the parsed settings under "args", in the parser's order (the
    model card's recipe line is built from them): the shipped log's keys stay in that order."""
    ap = pretrain_base.build_parser()
    settings = options.from_args(ap.parse_args([]), pretrain_base.PretrainSettings,
                                 pretrain_base.OPTIONS)
    recorded = vars(settings)
    assert list(recorded) == ["out", "steps", "short", "batch", "lr", "warmup", "patch",
                              "caption_every", "caption_format", "text_every", "caption_first",
                              "tiled", "threads", "eval_every", "heldout", "seed", "card",
                              "score", "note", "max_minutes"]
    assert (recorded["steps"], recorded["lr"], recorded["out"]) == (4500, 2e-3,
                                                                    str(env.BASE_DIR))
    shipped = json.loads((env.BASE_DIR / "training_log.json").read_text())["args"]
    assert [k for k in recorded if k in shipped] == list(shipped)
    chosen = options.from_args(ap.parse_args(
        ["--tiled", "--patch", "32", "--caption-format", "listing", "--max-minutes", "0.5"]),
        pretrain_base.PretrainSettings, pretrain_base.OPTIONS)
    assert (chosen.tiled, chosen.patch, chosen.caption_format, chosen.max_minutes) == (
        True, 32, "listing", 0.5)
    for bad in (["--patch", "48"], ["--caption-format", "poem"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)


def test_tune_lr_parses_its_settings():
    ap = tune_lr.build_parser()
    settings = options.from_args(ap.parse_args(["--variant", "direct", "--grid", "1e-3", "2e-3"]),
                                 tune_lr.TuneSettings, tune_lr.OPTIONS)
    assert settings == tune_lr.TuneSettings(variant="direct", grid=[1e-3, 2e-3])
    assert (settings.run, settings.base, settings.threads, settings.fast,
            settings.lora_only) == ("runs/tune", None, 1, False, False)
    for bad in ([], ["--variant", "cot"], ["--variant", "both", "--grid", "1"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)
