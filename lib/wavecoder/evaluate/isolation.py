"""Operating-system isolation for untrusted programs: bubblewrap and a cgroup per slot.

Every program step runs inside bubblewrap (Debian `bubblewrap`, the sandbox Flatpak uses)
started as the worker slot's own unprivileged uid: new user, PID, IPC, network, mount, UTS
and cgroup namespaces; a fresh root holding only read-only system directories (/usr, /etc)
and the toolchain folders a language needs, a size-capped tmpfs on /tmp and /dev/shm, and the
program's work dir; no_new_privs; no capabilities on the host. The project, the venv's data
files, user folders, /run and host sockets are simply not there.

Memory and process count are limited per slot, for the whole tree of processes, by a cgroup
(v1 `memory` + `pids` controllers, or v2), and everything in it is killed after every
program. The work dirs of compiled languages live on a size-capped tmpfs per slot.
Without root there are no cgroups or slot uids; without bubblewrap no namespaces:
`missing_protections` names what is then not enforced.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

MB = 1024 * 1024
_SYSTEM_DIRS = ("/usr", "/etc")  # read-only in every sandbox; /bin, /lib... are links into /usr
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def find_bwrap() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/usr/local/bin:/bin:" + os.environ.get("PATH", ""))


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_tmpfs(target: Path, size_mb: int, uid: int) -> None:
    """(Root) a size-capped tmpfs owned by `uid`: a slot's disk for compiled programs."""
    target.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_mb}m,mode=0700,uid={uid},gid={uid}".encode()
    if libc().mount(b"tmpfs", str(target).encode(), b"tmpfs", 2 | 4, opts) != 0:  # nosuid,nodev
        raise OSError(ctypes.get_errno(), f"mount tmpfs on {target}")


def unmount(target: Path) -> None:
    libc().umount2(str(target).encode(), 2)  # MNT_DETACH


def install_roots(paths: Iterable[str]) -> list[str]:
    """Folders to bind read-only so these toolchain files work: a binary's install prefix
    (`.../bin/x` -> `...`), a folder itself, or a file's folder; those under the system
    directories are already there."""
    roots: set[str] = set()
    for value in paths:
        if not value or not value.startswith("/"):
            continue
        for path in {os.path.normpath(value), os.path.realpath(value)}:
            p = Path(path)
            if not p.exists():
                continue
            if p.is_file():
                p = p.parent.parent if p.parent.name == "bin" else p.parent
            if any(str(p) == d or str(p).startswith(d + "/") for d in _SYSTEM_DIRS):
                continue
            if str(p) in ("/", "/root", "/home", "/work", "/tmp", "/run", "/var"):
                continue  # never a whole user or system area: the caller passed a bad path
            roots.add(str(p))
    kept = sorted(roots)
    return [r for r in kept if not any(r != o and r.startswith(o + "/") for o in kept)]


# seccomp: the kernel keyring calls fail with EPERM in every sandbox (keyrings belong to a user
# namespace, which a Python slot keeps for its lifetime: a key would reach the next program)
_KEYRING_SYSCALLS = {
    "x86_64": (0xC000003E, (248, 249, 250)),  # add_key, request_key, keyctl
    "aarch64": (0xC00000B7, (217, 218, 219)),
}


def seccomp_filter() -> bytes | None:
    """A classic BPF program for bwrap's --seccomp: keyring system calls (and, on x86_64, the
    x32 ABI) fail with EPERM, everything else is allowed; None on other architectures."""
    import struct

    machine = os.uname().machine
    if machine not in _KEYRING_SYSCALLS:
        return None
    arch, calls = _KEYRING_SYSCALLS[machine]
    ld_w_abs, jeq_k, jset_k, ret_k = 0x20, 0x15, 0x45, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    kill = 0x80000000  # SECCOMP_RET_KILL_PROCESS: a foreign architecture
    prog = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq_k, 1, 0, arch),
        (ret_k, 0, 0, kill),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog.append((jset_k, len(calls) + 1, 0, 0x40000000))  # x32 numbers -> EPERM
    for i, nr in enumerate(calls):
        prog.append((jeq_k, len(calls) - i, 0, nr))
    prog += [(ret_k, 0, 0, allow), (ret_k, 0, 0, eperm)]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def new_session_keyring() -> None:
    """(Between fork and exec) leave the caller's session keyring for a new, empty one."""
    nr = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
    if nr is not None:
        libc().syscall(nr, 1, 0)  # keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)


def bwrap_argv(
    bwrap: str,
    *,
    ro: Iterable[tuple[str, str]] = (),
    rw: Iterable[str] = (),
    workdir: str,
    tmpfs_mb: int = 64,
    workdir_tmpfs_mb: int | None = None,
    caps_in_userns: Iterable[str] = (),
    seccomp_fd: int | None = None,
) -> list[str]:
    """The bwrap command line for one sandbox (the program's argv follows it).

    `ro` are (host path, sandbox path) pairs bound read-only, `rw` host paths bound
    read-write at the same path; `workdir` is bound read-write (or, with
    `workdir_tmpfs_mb`, a fresh tmpfs of that size) and is the current directory.
    `caps_in_userns`: capabilities kept inside the sandbox's own user namespace (the Python
    zygote needs CAP_SYS_ADMIN there to give each program fresh namespaces); they grant
    nothing on the host.
    """
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
    ]
    caps = list(caps_in_userns)
    if caps:
        argv += ["--uid", "0", "--gid", "0"]
        for cap in caps:
            argv += ["--cap-add", cap]
    argv += ["--disable-userns"]  # no nested user namespace: no way back to capabilities
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for d in _SYSTEM_DIRS:
        if Path(d).is_dir():
            argv += ["--ro-bind", d, d]
    for name in _ROOT_LINKS:
        link = Path("/") / name
        if link.is_symlink():
            argv += ["--symlink", os.readlink(link), str(link)]
        elif link.is_dir():
            argv += ["--ro-bind", str(link), str(link)]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(tmpfs_mb * MB), "--tmpfs", "/tmp"]
    argv += ["--size", str(tmpfs_mb * MB), "--tmpfs", "/dev/shm"]
    argv += ["--dir", "/var", "--symlink", "../tmp", "/var/tmp"]
    for source, dest in ro:
        argv += ["--ro-bind", source, dest]
    for path in rw:
        argv += ["--bind", path, path]
    if workdir_tmpfs_mb:
        argv += ["--size", str(workdir_tmpfs_mb * MB), "--tmpfs", workdir]
    else:
        argv += ["--bind", workdir, workdir]
    # the root itself read-only: nothing written outside the capped tmpfs and the work dir,
    # and nothing left for the next program a long-lived sandbox (the zygote) runs
    argv += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", workdir, "--"]
    return argv


class SlotCgroup:
    """One cgroup per worker slot (v1 memory+pids hierarchies, or v2): limits and kills the
    whole tree of the slot's processes. Root only."""

    def __init__(self, name: str, memory_mb: int, pids: int) -> None:
        self.version = 2 if (CGROUP_ROOT / "cgroup.controllers").exists() else 1
        self.dirs: list[Path] = []
        if self.version == 2:
            parent = CGROUP_ROOT / "wavecoder"
            parent.mkdir(exist_ok=True)
            for folder in (CGROUP_ROOT, parent):
                with contextlib.suppress(OSError):
                    (folder / "cgroup.subtree_control").write_text("+memory +pids")
            d = parent / name
            d.mkdir(exist_ok=True)
            self.dirs = [d]
            (d / "memory.max").write_text(str(memory_mb * MB))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(pids))
        else:
            mem = CGROUP_ROOT / "memory" / "wavecoder" / name
            pid = CGROUP_ROOT / "pids" / "wavecoder" / name
            mem.mkdir(parents=True, exist_ok=True)
            pid.mkdir(parents=True, exist_ok=True)
            self.dirs = [mem, pid]
            (mem / "memory.limit_in_bytes").write_text(str(memory_mb * MB))
            with contextlib.suppress(OSError):  # no swap either (absent without swap accounting)
                (mem / "memory.memsw.limit_in_bytes").write_text(str(memory_mb * MB))
            with contextlib.suppress(OSError):
                (mem / "memory.max_usage_in_bytes").write_text("0")
            (pid / "pids.max").write_text(str(pids))
        self.procs_files = [str(d / "cgroup.procs") for d in self.dirs]

    @staticmethod
    def version_here() -> int:
        return 2 if (CGROUP_ROOT / "cgroup.controllers").exists() else 1

    @staticmethod
    def available() -> bool:
        if os.geteuid() != 0:
            return False
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return os.access(CGROUP_ROOT, os.W_OK)
        return all(os.access(CGROUP_ROOT / c, os.W_OK) for c in ("memory", "pids"))

    def join_self(self) -> None:
        """Move the calling process in (used between fork and exec: raw syscalls only)."""
        pid = str(os.getpid()).encode()
        for path in self.procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files:
            with contextlib.suppress(OSError):
                found |= {int(x) for x in Path(path).read_text().split()}
        return found

    def kill(self, keep: set[int] | None = None, timeout: float = 5.0) -> int:
        """SIGKILL every process but `keep`, until none is left; returns how many were killed."""
        keep = keep or set()
        killed = 0
        deadline = time.monotonic() + timeout
        while True:
            left = self.pids() - keep
            if not left or time.monotonic() > deadline:
                return killed
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.005)

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.dirs[0] / name).read_text().split()[0])
        return None

    def oom_killed(self) -> int:
        """How many times the memory limit was hit (v1 failcnt / v2 oom_kill events)."""
        with contextlib.suppress(OSError, ValueError):
            if self.version == 2:
                for line in (self.dirs[0] / "memory.events").read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
                return 0
            return int((self.dirs[0] / "memory.failcnt").read_text())
        return 0

    def remove(self) -> None:
        self.kill()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def probe_bwrap(bwrap: str, uid: int | None) -> str:
    """'' when bwrap can make a sandbox here (as `uid`), else why not."""

    def pre() -> None:
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)

    argv = bwrap_argv(bwrap, workdir="/tmp", caps_in_userns=("CAP_SYS_ADMIN",))
    try:
        proc = subprocess.run(
            [*argv, "/bin/true"], preexec_fn=pre, capture_output=True, timeout=30, cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode != 0:
        return proc.stderr.decode("utf-8", "replace").strip()[:300] or f"exit {proc.returncode}"
    return ""
