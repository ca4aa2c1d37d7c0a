"""Where the course is running: fast mode, Colab, GPU, seeds, freeing memory.

Every notebook starts with ``cotlib.env.describe()`` so a learner (or an instructor helping one)
sees the versions, the device and the mode at a glance.

>>> from cotlib import env
>>> isinstance(env.is_fast(), bool)
True
"""

from __future__ import annotations

import gc
import importlib
import os
import platform
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

#: Packages whose versions are shown by ``describe()`` and written into training cards.
TRACKED_PACKAGES = (
    "torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets",
    "openai", "PIL", "numpy", "ipywidgets",
)

#: Where the course is published; Colab install cells clone this (pinned to a tag).
COURSE_REPO = "https://github.com/cotlib/cotlib"
COURSE_TAG = "v0.1.0"

#: Root of the repository (``data/`` and ``runs/`` live here in a clone).
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
#: The course's shipped tiny base model (written by ``scripts/pretrain_base.py``).
BASE_DIR = DATA_DIR / "base"


def is_fast() -> bool:
    """True when ``COTLIB_FAST`` is set to a true value (tests, CI, quick workshop runs).

    >>> import os; os.environ["COTLIB_FAST"] = "0"; is_fast()
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

    >>> seed_everything(1); a = random.random(); seed_everything(1); a == random.random()
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
