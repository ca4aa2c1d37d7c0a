"""Where the course is running: fast mode, Colab, GPU, seeds, freeing memory.

Every notebook starts with ``cotlib.env.describe()`` so a learner (or an instructor helping one)
sees the versions, the device and the mode at a glance.

>>> from cotlib import env
>>> isinstance(env.is_fast(), bool)
True
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import platform
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: Packages whose versions are shown by ``describe()`` and written into training cards.
TRACKED_PACKAGES = (
    "torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets",
    "openai", "PIL", "numpy", "ipywidgets",
)

#: Where the course is published: the one place the repository URL is set (pyproject's
#: ``[project.urls]`` and every notebook's Colab cell repeat it; tests/test_package.py checks).
COURSE_REPO = "https://github.com/cotlib/cotlib"
#: The release the Colab cell asks for first (``v`` + the package version); when the repository
#: has no such tag it installs the default branch and says so (:func:`colab_install`).
COURSE_TAG = "v0.1.0"
#: The tested versions (README "Tested with"): ``make env`` and the Colab cell install with it.
CONSTRAINTS_FILE = "constraints.txt"

#: Root of the repository (``data/`` and ``runs/`` live here in a clone).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The course's shipped data (base model, task splits, photos): ``$COTLIB_DATA`` if set; in a
    checkout or an editable install the repository's ``data/``; in an installed wheel the
    package data ``cotlib/_data`` (the build copies ``data/`` there), found through
    :mod:`importlib.resources`.

    >>> (data_dir() / "tasks").is_dir()
    True
    """
    if os.environ.get("COTLIB_DATA"):
        return Path(os.environ["COTLIB_DATA"])
    if (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "data").is_dir():
        return REPO_ROOT / "data"
    from importlib.resources import files

    return Path(str(files("cotlib") / "_data"))


#: The folder :func:`data_dir` found when cotlib was imported.
DATA_DIR = data_dir()
#: The course's shipped tiny base model (written by ``scripts/pretrain_base.py``).
BASE_DIR = DATA_DIR / "base"


def is_fast() -> bool:
    """True when ``COTLIB_FAST`` is set to a true value (tests, CI, quick workshop runs).

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"COTLIB_FAST": "0"}):
    ...     is_fast()
    False
    """
    return os.environ.get("COTLIB_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def runs_dir() -> Path:
    """Folder holding run folders: ``$COTLIB_RUNS``, else ``runs/`` at the top of a clone (so
    notebooks in ``notebooks/`` and ``solutions/`` share it), else ``runs/`` here."""
    if "COTLIB_RUNS" in os.environ:
        return Path(os.environ["COTLIB_RUNS"])
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "runs"
    return Path("runs")


def run_dir(name: str = "course") -> Path:
    """The run folder ``name`` (created): every notebook reads and writes the same one.

    >>> run_dir("doctest").name
    'doctest'
    """
    path = runs_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Which teacher's traces a run uses: notebook 02 chooses, notebooks 03 and 04 follow
# --------------------------------------------------------------------------------------------

#: The teachers notebook 02 can write traces with: cotlib's local one (free, offline, breaks
#: traces on purpose) or a real one (OpenAI or your own OpenAI-compatible server).
TEACHERS = ("local", "real")
#: The file in a run folder that records the teacher chosen in notebook 02 (its
#: ``USE_REAL_TEACHER`` parameter), read by :func:`trace_files` in notebooks 03 and 04.
TEACHER_RECORD = "teacher.json"


class TracesMissing(FileNotFoundError):
    """The run uses a teacher whose traces were not written yet; the message names the fix."""


@dataclass(frozen=True)
class TraceFiles:
    """Where one teacher's traces, and the filter's verdicts on them, live in a run folder."""

    teacher: str  # one of TEACHERS
    traces: Path  # written by teacher.run_generation (notebook 02)
    verdicts: Path  # written by filtering.filter_traces(..., out=verdicts) (notebook 03)


def _trace_files(run: Path, teacher: str) -> TraceFiles:
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: use one of {TEACHERS}")
    suffix = "" if teacher == "local" else f"_{teacher}"
    return TraceFiles(teacher, run / f"traces{suffix}.jsonl", run / f"verdicts{suffix}.jsonl")


def use_teacher(run: str | os.PathLike, teacher: str) -> TraceFiles:
    """Record ``teacher`` as the one whose traces the run folder ``run`` uses, and return its
    files: notebook 02 calls it with its ``USE_REAL_TEACHER`` choice, so notebooks 03 and 04
    (:func:`trace_files`) read the same traces with nothing renamed.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> use_teacher(folder, "real").traces.name, trace_files(folder, must_exist=False).teacher
    ('traces_real.jsonl', 'real')
    """
    run = Path(run)
    files = _trace_files(run, teacher)
    run.mkdir(parents=True, exist_ok=True)
    (run / TEACHER_RECORD).write_text(json.dumps(
        {"teacher": teacher, "traces": files.traces.name, "verdicts": files.verdicts.name}) + "\n")
    return files


def trace_files(run: str | os.PathLike, teacher: str | None = None, *,
                must_exist: bool = True) -> TraceFiles:
    """The traces and verdicts files of ``teacher`` in the run folder ``run``; ``None``: the
    teacher notebook 02 recorded there (:func:`use_teacher`), or the local one if none was.

    The local teacher's traces can always be made again for free (notebooks 03 and 04 do it
    when they are missing); a real teacher's cannot, so with ``must_exist`` a missing file raises
    :class:`TracesMissing` saying how to write it.
    """
    run = Path(run)
    if teacher is None:
        record = run / TEACHER_RECORD
        if record.exists():
            try:
                teacher = json.loads(record.read_text())["teacher"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{record} is damaged ({err}): delete it and run notebook 02 "
                                 "again") from None
        else:
            teacher = "local"
    files = _trace_files(run, teacher)
    if must_exist and teacher != "local" and not files.traces.exists():
        raise TracesMissing(
            f"this run uses the {teacher} teacher's traces, but {files.traces} does not exist: run "
            "notebook 02 with USE_REAL_TEACHER = True (its section 8 writes them), or with "
            "USE_REAL_TEACHER = False to go back to the local teacher's traces")
    return files


@dataclass
class Hardware:
    """What the code will run on. ``dtype`` is the name of the torch dtype to use."""

    device: str  # "cuda", "mps" or "cpu"
    gpu_name: str | None
    gpu_memory_gb: float | None
    bf16: bool
    dtype: str  # "bfloat16", "float16" or "float32"
    cpu_count: int


def hardware() -> Hardware:
    """Detect the device and the best training/inference dtype for it.

    bf16 where the GPU supports it (Ampere and newer), fp16 on older GPUs such as Colab's T4,
    fp32 on CPU.

    >>> hardware().device in {"cuda", "mps", "cpu"}
    True
    """
    import torch

    cpu_count = os.cpu_count() or 1
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        bf16 = bool(torch.cuda.is_bf16_supported()) and props.major >= 8
        return Hardware("cuda", props.name, round(props.total_memory / 2**30, 1), bf16,
                        "bfloat16" if bf16 else "float16", cpu_count)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", "Apple GPU", None, False, "float16", cpu_count)
    return Hardware("cpu", None, None, False, "float32", cpu_count)


def torch_dtype(name: str | None = None):
    """The torch dtype for ``name`` (or for this hardware when ``None``).

    >>> str(torch_dtype("float32"))
    'torch.float32'
    """
    import torch

    return getattr(torch, name or hardware().dtype)


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so a run can be repeated.

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ):  # it also sets PYTHONHASHSEED for child processes
    ...     seed_everything(1); a = random.random(); seed_everything(1); a == random.random()
    True
    """
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with torch on ``n`` CPU threads (``None``: as set now), then restore the count
    it had before, also when the block raises.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def quiet_model_loading() -> None:
    """No "Loading weights" progress bar each time transformers loads a model (noise in a
    notebook: the course's models load in a fraction of a second); the hub's download bars stay
    on, so a first download in full mode still shows its progress (unless
    ``HF_HUB_DISABLE_PROGRESS_BARS=1`` turned them off)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' bars; it also turns off the hub's
    if constants.HF_HUB_DISABLE_PROGRESS_BARS is not True:
        enable_progress_bars()  # downloads show their progress again


def free_memory(*objects: object) -> dict[str, float]:
    """Drop references, collect garbage and empty the GPU cache between notebook stages.

    Pass nothing and delete your own variables first (``del model``); the function cannot delete
    names in your namespace. Returns GPU memory in GiB after cleaning (empty dict on CPU).

    >>> free_memory()
    {}
    """
    del objects
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover
        return {}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        return {
            "allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 2),
            "reserved_gb": round(torch.cuda.memory_reserved() / 2**30, 2),
        }
    return {}


def versions() -> dict[str, str]:
    """Installed versions of the packages the course depends on ("missing" when absent).

    >>> "torch" in versions()
    True
    """
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            module = importlib.import_module(name)
            out[name if name != "PIL" else "pillow"] = getattr(module, "__version__", "?")
        except ImportError:
            out[name if name != "PIL" else "pillow"] = "missing"
    return out


def describe() -> dict[str, object]:
    """Everything a setup check needs: versions, hardware, mode, disk, key presence.

    The OpenAI key is reported only as present or absent, never printed.
    """
    hw = hardware()
    free_gb = round(shutil.disk_usage(Path.cwd()).free / 2**30, 1)
    return {
        "versions": versions(),
        "hardware": asdict(hw),
        "mode": "fast" if is_fast() else "full",
        "colab": in_colab(),
        "hub_offline": offline(),
        "disk_free_gb": free_gb,
        "openai_key_present": bool(os.environ.get("OPENAI_API_KEY")),
        "platform": platform.platform(),
    }


def report() -> str:
    """A short human-readable version of :func:`describe` for notebooks and ``cotlib doctor``."""
    info = describe()
    hw = info["hardware"]
    lines = [
        f"mode        : {info['mode']}"
        + (" (COTLIB_FAST=1)" if info["mode"] == "fast" else " (full size)"),
        f"device      : {hw['device']}"
        + (f" ({hw['gpu_name']}, {hw['gpu_memory_gb']} GiB)" if hw["gpu_name"] else "")
        + f", dtype {hw['dtype']}, {hw['cpu_count']} CPU cores",
        f"colab       : {info['colab']}",
        f"hub offline : {info['hub_offline']}",
        f"disk free   : {info['disk_free_gb']} GiB",
        f"OpenAI key  : {'set' if info['openai_key_present'] else 'not set (local teacher works)'}",
        "versions    : " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Colab: install the course from its repository with the tested versions
# --------------------------------------------------------------------------------------------

#: Packages Colab brings built for its own GPU driver: the install keeps Colab's builds instead
#: of replacing them with the tested ones (several GB, and a restart).
COLAB_KEEPS = ("torch", "torchvision", "torchaudio", "triton", "nvidia-", "cuda-")

#: The install cell every notebook starts with (tests/test_package.py checks that they do).
COLAB_CELL = f'''\
# Colab: fetch the course and install it with its tested versions (elsewhere `make lab` did).
import os
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("/content/cotlib"):
        !git clone --quiet --depth 1 {COURSE_REPO} /content/cotlib
    !cd /content/cotlib && python -m cotlib.env colab-install
    sys.path.insert(0, "/content/cotlib")'''


class InstallError(RuntimeError):
    """The course could not be installed; the message says what to do."""


def _run(cmd: list[str], cwd: str | os.PathLike | None = None) -> int:
    import subprocess

    return subprocess.run(cmd, cwd=cwd, check=False).returncode


def colab_install(
    checkout: str | os.PathLike = ".",
    *,
    tag: str = COURSE_TAG,
    repo: str = COURSE_REPO,
    run=_run,
    keep: tuple[str, ...] = COLAB_KEEPS,
    say=print,
) -> str:
    """Turn the clone in ``checkout`` into the release ``tag`` and install it (with the
    ``course`` extra) under the versions in :data:`CONSTRAINTS_FILE`. Returns the ref installed:
    ``tag``, or ``"default branch"`` when the repository has no such tag (said in a message).

    Packages matching ``keep`` (Colab's own torch and CUDA stack) are left as Colab installed
    them. ``run(cmd, cwd)`` runs a command and returns its exit code (tests pass a fake).
    """
    checkout = Path(checkout)
    if run(["git", "fetch", "--quiet", "--depth", "1", "origin", "tag", tag], checkout) == 0 \
            and run(["git", "checkout", "--quiet", tag], checkout) == 0:
        ref = tag
        say(f"cotlib {tag} from {repo}")
    else:
        ref = "default branch"
        say(f"note: {repo} has no tag {tag} (or it could not be fetched): installing its default "
            "branch instead - the notebooks there may be newer than this one; open them from "
            "the repository if a cell fails")
    constraints = checkout / CONSTRAINTS_FILE
    if not constraints.exists():
        raise InstallError(f"{constraints} is missing: the clone in {checkout} is incomplete - "
                           f"delete it and run the cell again")
    kept = [line for line in constraints.read_text().splitlines()
            if not line.strip().lower().startswith(keep)]
    colab_constraints = checkout / ".colab-constraints.txt"
    colab_constraints.write_text("\n".join(kept) + "\n")
    say("installing the tested versions (constraints.txt; keeping Colab's torch and CUDA)")
    code = run([sys.executable, "-m", "pip", "install", "--quiet", "-e", ".[course]",
                "-c", colab_constraints.name], checkout)
    if code != 0:
        raise InstallError(f"pip install failed (exit {code}): read pip's message above; "
                           "Runtime > Restart session, then run this cell again")
    say("installed: if Colab asks to restart the session (a package it had loaded changed "
        "version), restart it and run the notebook again from the top")
    return ref


def main(argv: list[str] | None = None) -> int:
    """``python -m cotlib.env colab-install`` (what the Colab cell runs in its clone)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["colab-install"]:
        print("usage: python -m cotlib.env colab-install", file=sys.stderr)
        return 2
    try:
        colab_install(".")
    except InstallError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
