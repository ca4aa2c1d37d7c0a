"""Running the local teacher: in a background thread or a child process (:class:`LocalTeacher`,
for notebooks and tests) or in the foreground (``cotlib teacher serve``)."""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from cotlib import options
from cotlib.teacher_server.app import create_app
from cotlib.teacher_server.settings import KEEP_ALIVE_S, MODEL_ID, Faults

log = logging.getLogger(__name__)


# -----------------------------------------------------------------------------
# running it: in a background thread (notebooks, tests) or in the foreground (CLI)


class LocalTeacher:
    """Run the local teacher on 127.0.0.1 in a background thread (own event loop, so it works
    inside Jupyter too), or with ``process=True`` in a child process, which keeps the server's
    CPU work off your Python process (use it for throughput measurements).

    >>> with LocalTeacher() as t:  # doctest: +ELLIPSIS
    ...     t.base_url
    'http://127.0.0.1:.../v1'
    """

    def __init__(self, faults: Faults | None = None, *, port: int = 0, host: str = "127.0.0.1",
                 seed: int = 0, app: Any = None, process: bool = False,
                 startup_timeout_s: float = 15.0) -> None:
        if process and app is not None:
            raise ValueError("process=True runs the standard app: pass faults, not app")
        self.faults = faults or Faults()
        self.host, self.port, self.seed = host, port, seed
        self.process = process
        self.app = None if process else (app if app is not None else create_app(self.faults, seed))
        self.startup_timeout_s = startup_timeout_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def injections(self) -> list[dict]:
        """A copy of the injection log."""
        if self.app is None:
            return self._get("/v1/cotlib/injections")["data"]
        return list(self.app.state.injections)

    @property
    def requests(self) -> int:
        """How many trace requests arrived so far (judge requests not included)."""
        if self.app is None:
            return int(self._get("/v1/cotlib/injections")["requests"])
        return int(self.app.state.requests)

    @property
    def judge_requests(self) -> int:
        """How many judge requests arrived so far."""
        if self.app is None:
            return int(self._get("/v1/cotlib/injections")["judge_requests"])
        return int(self.app.state.judge_requests)

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def start(self) -> LocalTeacher:
        if self.process:
            return self._start_process()
        import uvicorn

        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                backlog=2048, timeout_keep_alive=KEEP_ALIVE_S,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"cotlib-teacher-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"the local teacher on port {self.port} failed to start")
            if self._server.started and _healthy(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the local teacher did not answer /health within "
                           f"{self.startup_timeout_s} s")

    def _start_process(self) -> LocalTeacher:
        cmd = [sys.executable, "-m", "cotlib.teacher_server", "--host", self.host,
               "--port", str(self.port), "--seed", str(self.seed), *fault_args(self.faults)]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True)
        line = self._proc.stdout.readline() if self._proc.stdout else ""  # the URL line
        match = re.search(r"http://\S+:(\d+)/v1", line)
        if match:
            self.port = int(match.group(1))
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _healthy(self.host, self.port):
                    return self
                time.sleep(0.05)
        self.stop()
        self._stderr.seek(0)
        detail = self._stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"the local teacher process did not start: {detail or line!r}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalTeacher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Flags whose name is not the :class:`Faults` field's (``--rate-429`` is ``rate_429``).
_FAULT_FLAGS = {"seed": "--fault-seed", "retry_after_s": "--retry-after"}
_FAULT_HELP = {
    "latency_ms": "ms from a request's arrival to its answer",
    "latency_jitter_ms": "latency spread: uniform in latency +- this",
    "rate_429": "share of requests answered 429 (retried by the client)",
    "retry_after_s": "seconds, sent with 429s",
    "rate_500": "share of requests answered 500 (retried by the client)",
    "rate_malformed": "share of traces with a format fault",
    "rate_wrong_answer": "share of traces concluding a wrong answer",
    "rate_refusal": "share of requests refused",
    "seed": "seed of the fault draws",
}


#: ``cotlib teacher serve``'s options that set a :class:`Faults` field, one per field (its type
#: and default are the field's): (flag, field, help).
FAULT_OPTIONS = options.field_options(Faults, _FAULT_HELP, _FAULT_FLAGS)


def fault_args(faults: Faults) -> list[str]:
    """Command-line flags of :func:`main` that recreate ``faults``.

    >>> fault_args(Faults(rate_429=0.2))[4:6]
    ['--rate-429', '0.2']
    """
    return [a for flag, name, *_ in FAULT_OPTIONS for a in (flag, repr(getattr(faults, name)))]


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket with TCP_NODELAY, which accepted connections inherit.

    Without it, keep-alive requests wait ~40 ms each: the response goes out in two writes and
    Nagle's algorithm holds the second until the client's delayed ACK arrives.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno != errno.EADDRINUSE:
            raise
        raise OSError(err.errno, f"port {port} on {host} is already in use (another teacher "
                      "running?): choose another with --port, or stop the other process") from None
    return sock


def _healthy(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def serve(host: str = "127.0.0.1", port: int = 8765, faults: Faults | None = None,
          seed: int = 0) -> None:
    """Run the local teacher in the foreground until Ctrl-C."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the teacher", host)
    sock = _bind(host, port)  # port 0 picks a free port; the line below names it
    print(f"cotlib local teacher on http://{host}:{sock.getsockname()[1]}/v1 "
          f"(model {MODEL_ID!r}); Ctrl-C to stop", flush=True)
    config = uvicorn.Config(create_app(faults, seed=seed), log_level="warning",
                            access_log=False, lifespan="off", backlog=2048,
                            timeout_keep_alive=KEEP_ALIVE_S)
    uvicorn.Server(config).run(sockets=[sock])


def build_parser() -> argparse.ArgumentParser:
    """``cotlib teacher serve``'s options: the server's, then one per :class:`Faults` field
    (its default and type, declared once there); ``--help`` shows each default.

    >>> build_parser().parse_args(["--rate-429", "0.2"]).rate_429
    0.2
    """
    p = argparse.ArgumentParser(prog="cotlib teacher serve",
                                description="Run the local OpenAI-compatible teacher.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=0, help="wording seed")
    options.add_options(p, Faults(), FAULT_OPTIONS)
    return p


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The :class:`Faults` that :func:`build_parser`'s fault options describe."""
    return options.from_args(args, Faults(), FAULT_OPTIONS)


def main(argv: list[str] | None = None) -> int:
    """``cotlib teacher serve --port 8765 --rate-429 0.2 ...``"""
    args = build_parser().parse_args(argv)
    faults = faults_from_args(args)
    try:
        serve(args.host, args.port, faults, seed=args.seed)
    except OSError as err:
        print(f"cotlib teacher serve ({args.host}:{args.port}): {err.strerror or err}",
              file=sys.stderr)
        return 1
    return 0
