"""Notebook 08 in a real browser: JupyterLab on 127.0.0.1, driven by Debian's Chromium through
Playwright. Run all cells, check the model picker's choices, upload a large photo through the
Upload button's file chooser (the panels empty, and the line under the preview says it was shrunk
and from what size), press Answer, and check that all four stage panels fill. A screenshot is
saved under test-artifacts/.

We open the *student* copy (notebooks/), as `make lab` does: it has no stored outputs, so every
widget on the page comes from this run (the solution copy's stored widget views would render as
stale "model not found" boxes), and its exercise is a stub, so the test also shows that the
notebook runs to the end before the exercise is done. The notebook is copied into a temporary
folder that JupyterLab serves, so its autosave and checkpoints can never write into the
repository. JupyterLab's settings, workspaces, runtime and data files, IPython's folder and the
course's run folder (COTLIB_RUNS) live there too.

Skipped only where Chromium is missing (`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cotlib import stages, widgets

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "08_try_your_own_image.ipynb"
PHOTO = ROOT / "data" / "photos" / "grace_hopper.jpg"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # no name lookups at all: the page only ever talks to 127.0.0.1 (the notebook's Colab badge
    # would otherwise be fetched from the internet)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# JupyterLab settings for the test: no autosave, no news or update checks, every cell in the DOM.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# every code cell shows an execution count ("[7]:"), none is queued or running ("[*]:")
ALL_CELLS_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""

pytestmark = pytest.mark.slow


def _chromium() -> str:
    found = shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)
    if found is None:
        pytest.skip("Chromium is missing, so the browser test cannot run: install it with "
                    "`apt-get install chromium chromium-driver` (.ci/run does this)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str = "GET", timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


class Lab:
    """A JupyterLab server serving ``root`` on 127.0.0.1, started and stopped by the test."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "jupyterlab.log"
        settings = root / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(env, JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(root / "lab-workspaces"),
                   JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
                   JUPYTER_DATA_DIR=str(root / "jupyter-data"), IPYTHONDIR=str(root / "ipython"))
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            f"--IdentityProvider.token={self.token}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.allow_root=True", "--ServerApp.terminals_enabled=False",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=", "--ServerApp.shutdown_no_activity_timeout=600",
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, cwd=root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}"

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def kernel_ready(self, notebook: str) -> bool:
        """True once the notebook's kernel is started, idle and connected to a browser."""
        request = urllib.request.Request(self.url("api/sessions"))
        with urllib.request.urlopen(request, timeout=2) as response:
            sessions = json.load(response)
        return any(s.get("path") == notebook and s["kernel"]["execution_state"] == "idle"
                   and s["kernel"].get("connections", 0) > 0 for s in sessions)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if _api(self.url("api/status")) == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """Shut down cleanly (kernels included); kill our own server if it hangs."""
        if self.proc.poll() is None:
            try:
                _api(self.url("api/shutdown"), method="POST", timeout=5)
            except (urllib.error.URLError, OSError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def lab(tmp_path, tiny_cache):
    chromium = _chromium()
    if not NOTEBOOK.exists():
        pytest.fail(f"{NOTEBOOK} is missing: run scripts/make_student_notebooks.py")
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    env = dict(os.environ, COTLIB_FAST="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", COTLIB_RUNS=str(tmp_path / "runs"),
               COTLIB_CACHE=str(tiny_cache), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    server = Lab(tmp_path, env)
    try:
        server.wait_ready()
        yield server, chromium
    finally:
        server.stop()


def test_notebook_08_in_chromium(lab, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]' (it drives Debian's Chromium)")

    server, chromium = lab
    from PIL import Image

    big = tmp_path / "upload" / "big_grace_hopper.jpg"  # larger than the app's 2048 px a side
    big.parent.mkdir()
    with Image.open(PHOTO) as photo:
        photo.convert("RGB").resize((3000, 2000)).save(big)
    expect.set_options(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser_08_try_your_own_image.png"
    failure = ARTIFACTS / "browser_08_failure.png"
    for old in (shot, failure):  # never mistake an earlier run's picture for this one's
        old.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(60_000)
            page.route(lambda url: not url.startswith(server.base), lambda route: route.abort())
            page.goto(server.url(f"lab/tree/{NOTEBOOK.name}"))
            # the notebook is open, and its kernel is started, idle and connected
            page.locator(".jp-NotebookPanel").wait_for()
            deadline = time.monotonic() + 90
            while not server.kernel_ready(NOTEBOOK.name):
                assert time.monotonic() < deadline, "the kernel did not start:\n" + server.log()
                page.wait_for_timeout(300)  # (not time.sleep: the page's events must run)

            # Run → Run All Cells, as a person would
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.wait_for_function(ALL_CELLS_RAN, timeout=120_000)
            errors = page.locator(".jp-OutputArea-output", has_text="Traceback")
            assert errors.count() == 0, errors.first.inner_text()

            app = page.locator(".cotlib-app")
            app.scroll_into_view_if_needed()
            expect(app.locator(".cotlib-image-info")).to_contain_text("chelsea.jpg")

            # the picker names the stand-in and the shipped base apart; fast mode starts with
            # the stand-in
            picker = app.locator("select").nth(1)
            options = [o.replace("\xa0", " ")  # ipywidgets shows spaces as no-break spaces
                       for o in picker.locator("option").all_inner_texts()]
            assert options == list(widgets.MODEL_CHOICES)
            assert picker.evaluate("s => s.options[s.selectedIndex].text") == "stand-in"
            expect(app.locator(".cotlib-model-info")).to_contain_text("loaded: stand-in")

            # the notebook's last cell answered about chelsea: its text is in the panels
            bodies = app.locator(".cotlib-stage-body")
            assert "waiting" not in bodies.first.inner_text()

            # switch search off (the notebook's last section switched it on), upload, answer
            app.get_by_role("checkbox", name="stage-level beam search").uncheck()
            with page.expect_file_chooser() as chooser:
                app.locator(".cotlib-upload").click()
            chooser.value.set_files(str(big))
            info = app.locator(".cotlib-image-info")
            expect(info).to_have_text(f"{big.name} (uploaded): 2048×1365 px "
                                      "(shrunk from 3000×2000: at most 2048 px a side)")
            for stage in stages.STAGES:  # the previous image's text is gone
                expect(app.locator(f".cotlib-stage-{stage} .cotlib-stage-body")).to_have_text(
                    "waiting…")
            expect(app.locator(".cotlib-summary")).to_have_text("")
            app.locator("button.cotlib-answer").click()

            expect(app.locator(".cotlib-status")).to_contain_text(f"done: {big.name}",
                                                                  timeout=60_000)
            for stage in stages.STAGES:
                panel = app.locator(f".cotlib-stage-{stage}")
                expect(panel.locator(".cotlib-stage-stats")).to_contain_text("tokens")
                expect(panel.locator(".cotlib-stage-stats")).to_contain_text("stop:")
                body = panel.locator(".cotlib-stage-body").inner_text().strip()
                assert body and "waiting" not in body, (stage, body)
            expect(app.locator(".cotlib-summary")).to_contain_text("greedy: prompt")
            app.screenshot(path=str(shot))
        except Exception:
            if "page" in locals():
                page.screenshot(path=str(failure), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
