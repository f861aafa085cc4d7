"""The embedded llama.cpp server: `python -m llama_cpp.server` on a free loopback port, started
and always stopped here, and taken down with us when we die (orphan watch, atexit)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PARENT_PID_ENV = "WAVECODER_PARENT_PID"


def exit_when_orphaned(parent_pid: int, interval_s: float = 1.0, grace_s: float = 5.0) -> None:
    """Stop this process once `parent_pid` is gone (its parent changes: we were re-parented).
    The server runs in its own session so that a notebook interrupt does not kill it mid-request,
    which also means a SIGKILLed parent could not take it down; this daemon thread does. SIGTERM
    first (uvicorn shuts down cleanly), a hard exit if that has not ended us within `grace_s`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()


def serve_llama_cpp(argv: list[str]) -> None:
    """Entry point of the server subprocess: `llama_cpp.server`'s own main, after optionally
    switching off llama.cpp's extra buffer types (weight repacking). On CPUs that report AMX
    inside VMs that do not enable it, the AMX repack path dies with a general protection fault
    at `ldtilecfg` on the first request; the plain CPU path works everywhere."""
    extra = "--extra-bufts" in argv
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        exit_when_orphaned(int(parent))
    sys.argv = [argv[0]] + [a for a in argv[1:] if a not in ("--extra-bufts", "--no-extra-bufts")]
    if not extra:
        import llama_cpp
        import llama_cpp.llama

        original = llama_cpp.llama_model_default_params

        def no_extra_bufts():
            params = original()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_model_default_params = no_extra_bufts
        llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts
    from llama_cpp.server.__main__ import main

    main()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LIVE_SERVERS: set[EmbeddedServer] = set()


@atexit.register
def _stop_all_servers() -> None:  # last resort: a crash must not leave a server behind
    for server in list(_LIVE_SERVERS):
        server.stop()


class EmbeddedServer:
    """`python -m llama_cpp.server` on 127.0.0.1 at a free port; a context manager that always
    stops it (also on error or KeyboardInterrupt)."""

    def __init__(
        self,
        gguf: str | Path,
        model_alias: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 180.0,
        extra_bufts: bool = False,
    ) -> None:
        self.gguf = Path(gguf)
        self.extra_bufts = extra_bufts
        self.model_alias = model_alias
        self.n_ctx = n_ctx
        # llama.cpp's own default (half the cores): spinning OpenMP threads on a busy machine
        # slowed a 135M model twentyfold in our runs
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        # `python -m llama_cpp.server`, through `serve_llama_cpp` so extra buffer types can be
        # switched off first (see there)
        entry = (
            "import sys; from wavecoder.llm.server import serve_llama_cpp; "
            "serve_llama_cpp(sys.argv)"
        )
        return [
            sys.executable,
            "-c",
            entry,
            "--extra-bufts" if self.extra_bufts else "--no-extra-bufts",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]

    def _log_tail(self, chars: int = 2000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def start(self) -> EmbeddedServer:
        import httpx

        if self.proc is not None:
            return self
        self.port = free_port()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(self.port),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", PARENT_PID_ENV: str(os.getpid())},
            start_new_session=True,  # a notebook interrupt reaches us, and we stop it
        )
        _LIVE_SERVERS.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}/v1/models"
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"llama.cpp server exited with code {self.proc.returncode} while "
                        f"starting ({self.gguf.name}); log tail:\n{self._log_tail()}"
                    )
                try:
                    if httpx.get(url, timeout=2.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"llama.cpp server did not answer {url} within "
                        f"{self.startup_timeout_s:.0f} s; log tail:\n{self._log_tail()}"
                    )
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _LIVE_SERVERS.discard(self)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
