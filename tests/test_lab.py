"""`make lab` (issue 12): JupyterLab starts as root too, and a notebook really opens in it.

The server is started by the real `make lab` (with `-o setup`: the environment is already there),
so the command line is the Makefile's own, `--allow-root` included when the test runs as root.
What a test needs on top (a free port on 127.0.0.1, a known token, no browser, no update checks)
comes from a jupyter_server_config.json in a temporary JUPYTER_CONFIG_DIR; HOME and every Jupyter
folder point into tmp_path, so nothing under ~ is touched. A headless Chromium (Debian's
`chromium`, which scripts/toolchains.sh installs as root) then opens notebooks/01_select.ipynb.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import PROJECT

NOTEBOOK = "01_select.ipynb"
TOKEN = "wavecoder-test-lab-token"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 5):
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _isolated_env(tmp_path: Path) -> dict[str, str]:
    """HOME and every Jupyter/IPython folder under tmp_path."""
    env = dict(os.environ)
    dirs = {
        "HOME": "home",
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
        "MPLCONFIGDIR": "mpl",
        "XDG_CONFIG_HOME": "xdg-config",
        "XDG_CACHE_HOME": "xdg-cache",
    }
    for name, sub in dirs.items():
        (tmp_path / sub).mkdir(parents=True)
        env[name] = str(tmp_path / sub)
    env.pop("JUPYTER_TOKEN", None)
    env.pop("MAKEFLAGS", None)
    return env


@pytest.fixture
def lab(tmp_path):
    """`make -o setup lab` on a free port with a known token; stopped (its process group) after."""
    port = _free_port()
    env = _isolated_env(tmp_path)
    config = {
        "ServerApp": {"ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False},
        "IdentityProvider": {"token": TOKEN},
        # no requests to the internet (news feed, update check)
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    }
    (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", "setup", "lab"],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`make lab` exited ({proc.returncode}):\n{_tail(tmp_path)}")
            try:
                _get_json(f"{base}/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer /api/status in 90 s:\n{_tail(tmp_path)}")
            time.sleep(0.5)
        yield base, tmp_path
    finally:
        _stop(proc, base, Path(env["JUPYTER_RUNTIME_DIR"]))
        log.close()


def _stop(proc: subprocess.Popen, base: str, runtime: Path) -> None:
    """Shut the server down (kernels first), then signal make's process group; kernels run in
    their own sessions, so any still alive (cmdline naming our runtime dir) are killed by pid."""
    if proc.poll() is None:
        request = urllib.request.Request(
            f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {TOKEN}"}
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
            proc.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    for pid in _processes_naming(str(runtime)):
        _kill(pid)


def _kill(pid: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _processes_naming(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def _tail(tmp_path: Path, n: int = 3000) -> str:
    return (tmp_path / "lab.log").read_text(errors="replace")[-n:]


def _chromium() -> str:
    for name in CHROMIUM:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium not found: `apt-get install chromium` as root "
        "(scripts/toolchains.sh installs it on Debian)"
    )


def _first_markdown_line() -> str:
    nb = json.loads((PROJECT / "notebooks" / NOTEBOOK).read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    source = "".join(cell["source"])
    return source.splitlines()[0].lstrip("#").strip()


def test_make_lab_passes_allow_root_as_root_only(tmp_path):
    """The recipe, run by make with a stub `jupyter` and a stub `id`: --allow-root iff uid 0."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "jupyter"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    for uid in ("0", "1000"):
        fake = tmp_path / f"id-{uid}"
        fake.mkdir()
        (fake / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (fake / "id").chmod(0o755)
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
        env.pop("MAKEFLAGS", None)
        done = subprocess.run(
            ["make", "-s", "--no-print-directory", "-o", "setup", "lab", f"VENV={venv}"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        args = done.stdout.split()
        expected = ["lab", "notebooks/"] + (["--allow-root"] if uid == "0" else [])
        assert args == expected, (uid, done.stdout)
    # and `make lab` runs setup first, then that recipe
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "lab"],
        cwd=PROJECT,
        env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert "scripts/setup.sh" in lines[0] and "jupyter lab notebooks/" in lines[-1], lines


# what the page shows, read in the page itself
STATE_JS = """JSON.stringify((() => {
  const nb = document.querySelector(".jp-NotebookPanel-notebook");
  const heading = nb && nb.querySelector(".jp-MarkdownCell.jp-mod-rendered h1");
  const kernel = document.querySelector(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName");
  const indicator = document.querySelector(
    ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator"
  );
  return {
    notebook: !!nb,
    cells: nb ? nb.querySelectorAll(".jp-Cell").length : 0,
    heading: heading ? heading.textContent : null,
    kernel: kernel ? kernel.textContent.trim() : null,
    status: indicator ? indicator.dataset.status : null,
  };
})())"""


class _DevTools:
    """One tab of a headless Chromium, driven over the DevTools protocol (no events enabled)."""

    def __init__(self, profile: Path, timeout: float = 60):
        import websocket  # websocket-client, a dependency of jupyter_server

        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.exists() and active.read_text().strip()):
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium wrote no DevToolsActivePort")
            time.sleep(0.2)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self.calls = 0

    def call(self, method: str, **params):
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        done = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return done["result"].get("value")


def test_make_lab_opens_a_notebook_in_headless_chromium(lab):
    chromium = _chromium()
    base, tmp_path = lab
    nb = json.loads((PROJECT / "notebooks" / NOTEBOOK).read_text())
    kernelspec = nb["metadata"]["kernelspec"]
    assert kernelspec["name"] == "wavecoder"
    assert _get_json(f"{base}/api/sessions") == []

    profile = tmp_path / "chromium"
    command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu"]
    command += ["--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}"]
    command += ["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
    command += ["--window-size=1280,900", "about:blank"]
    log = (tmp_path / "chromium.log").open("w")
    browser = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_isolated_env(tmp_path / "chromium-env"),
        start_new_session=True,
    )
    state: dict = {}
    try:
        tab = _DevTools(profile)
        tab.call("Page.navigate", url=f"{base}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        # open = the notebook panel with its first markdown cell rendered, and the notebook's
        # kernel connected and idle; the toolbar's kernel name and its status indicator update
        # separately (the indicator can read idle while the name still says "No Kernel"), so
        # wait for both
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = json.loads(tab.evaluate(STATE_JS) or "{}")
            named = state.get("kernel") == kernelspec["display_name"]
            if state.get("heading") and named and state.get("status") == "idle":
                break
            time.sleep(0.5)
        tab.ws.close()
    finally:  # Chromium's helpers (zygote, renderers) are in its process group
        _kill(browser.pid, group=True)
        for pid in _processes_naming(str(profile)):
            _kill(pid)
        browser.wait()
        log.close()

    assert state.get("notebook") and 0 < state["cells"] <= len(nb["cells"]), state
    assert state["heading"].startswith(_first_markdown_line()), state
    assert state["kernel"] == kernelspec["display_name"], (state, _tail(tmp_path))
    assert state["status"] == "idle", (state, _tail(tmp_path))

    sessions = _get_json(f"{base}/api/sessions?token={TOKEN}")
    assert [s["path"] for s in sessions] == [NOTEBOOK], sessions
    assert sessions[0]["kernel"]["name"] == kernelspec["name"], sessions
    kernel = _get_json(f"{base}/api/kernels/{sessions[0]['kernel']['id']}")
    assert kernel["name"] == kernelspec["name"]
    assert kernel["execution_state"] == "idle", kernel
