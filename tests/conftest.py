"""Test-wide guards: no network except loopback, hub offline, fast mode, a private cache."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("COTLIB_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny models run fastest on one thread, and a second thread only fights the notebook kernels.
torch.set_num_threads(1)


class NetworkBlocked(RuntimeError):
    """A test tried to reach a non-loopback address."""


_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise NetworkBlocked(f"test tried to reach {address!r}; tests must stay offline")
    return _real_connect(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
        raise NetworkBlocked(f"test tried to resolve {host!r}; tests must stay offline")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    socket.getaddrinfo = _guarded_getaddrinfo
    yield
    socket.socket.connect = _real_connect
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache folder for tiny models shared by the whole session."""
    path = tmp_path_factory.mktemp("cotlib-cache")
    old = os.environ.get("COTLIB_CACHE")
    os.environ["COTLIB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("COTLIB_CACHE", None)
    else:
        os.environ["COTLIB_CACHE"] = old


#: The files and notebooks that take longest under `make test` (a fresh-clone run, 2026-11-29:
#: 106, 53, 50, 40+, 34+, 31 and 30 s), started first so that the two workers of
#: `--dist loadfile` (whole files per worker) finish close together instead of one waiting.
SLOW_FIRST = ("tests/test_pretrain_base.py", "solutions/07_evaluation.ipynb",
              "notebooks/07_evaluation.ipynb", "tests/test_experiment.py", "tests/test_train.py",
              "tests/test_env_cli.py", "tests/test_browser.py", "tests/test_package.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        try:
            path = item.path.relative_to(config.rootpath).as_posix()
        except ValueError:
            return len(SLOW_FIRST)
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within each file stays as written
