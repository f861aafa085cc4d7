"""A pre-initialised Python per worker slot that forks one fresh child per program.

Not imported by the package: `sandbox.py` reads this text, appends `_wc_zygote(config)` and
runs it with `python -I -S -c` inside the slot's bubblewrap sandbox. Starting an interpreter
and importing what the programs import (numpy: ~100 ms) per program would cost more than
running most programs; forking this one costs ~1 ms.

Two roles, two zygotes per slot, in two separate sandboxes:

* `candidate`: runs the model's code. For each program it forks C, which enters fresh mount,
  IPC, network, UTS and PID namespaces (the zygote holds CAP_SYS_ADMIN, but only inside the
  sandbox's own user namespace) and forks G, pid 1 of the new PID namespace: G mounts a
  fresh /proc and size-capped tmpfs on /tmp, /dev/shm and the work dir, drops every
  capability (bounding set, securebits, capset), and forks H, which runs the candidate.
  When G dies the kernel kills everything left in its PID namespace. H executes the
  solution, then serves calls from the harness over a socket: a function name and
  arguments in, a return value out, both as JSON of plain data (`encode` below).
* `harness`: trusted. For each program it forks a child that runs the benchmark's tests in a
  fresh namespace, calling the candidate through proxies, and writes the verdict to a pipe
  that only the sandbox reads. Nothing of the candidate's process can reach it: the verdict
  never lives where the model's code runs, so there is no token, frame or hook to attack.

Protocol with the sandbox (a SOCK_SEQPACKET socket): `R` when ready; then per program a JSON
request with two file descriptors (the channel socket, and the output pipe / result pipe),
answered `P` once forked; later `K` from the sandbox kills and reaps the child, answered
`E<wait status>`.
"""

# ruff: noqa: E501


def _wc_zygote(config):  # noqa: C901 - one closure on purpose: nothing in it is importable
    import json
    import os
    import signal
    import socket
    import sys

    glb = globals()
    glb.pop("_wc_zygote", None)
    sys.path[:0] = config.get("site", [])
    for name in config.get("preload", []):
        try:
            __import__(name)
        except Exception:  # a missing optional module: the program's own import reports it
            pass
    role = config["role"]
    ctl = socket.socket(fileno=config["ctl_fd"])
    # the zygote is the same uid as its children: not dumpable, so they cannot ptrace it
    # or read its memory (and they cannot see it at all: fresh PID namespace)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 4, 24, 28
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
    NEWNS, NEWUTS, NEWIPC, NEWPID, NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000

    def check(rc, what):
        if rc != 0:
            raise OSError(ctypes.get_errno(), what)

    def mount(src, target, fstype, flags, data):
        check(
            libc.mount(
                src.encode() if src else None,
                target.encode(),
                fstype.encode() if fstype else None,
                flags,
                data.encode() if data else None,
            ),
            "mount " + target,
        )

    def drop_capabilities():
        # securebits: uid 0 in this user namespace never regains capabilities (exec included)
        check(libc.prctl(PR_SET_SECUREBITS, 0x2F, 0, 0, 0), "securebits")
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        sys_capset = {"x86_64": 126, "aarch64": 91}[os.uname().machine]
        check(libc.syscall(sys_capset, header, data), "capset")
        with open("/proc/self/status") as fh:
            status = fh.read()
        if "CapEff:\t0000000000000000" not in status or "CapBnd:\t0000000000000000" not in status:
            raise OSError("capabilities still held")

    def close_other_fds(keep):
        for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def apply_limits(limits):
        import resource

        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
        resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_mb"] * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize_mb"] * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["nofile"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    # ------------------------------------------------------------ framing (both roles)

    def send_frame(sock, obj):
        data = json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
        sock.sendall(len(data).to_bytes(8, "big") + data)

    def recv_exact(sock, n):
        parts, got = [], 0
        while got < n:
            chunk = sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the channel")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def recv_frame(sock, limit):
        n = int.from_bytes(recv_exact(sock, 8), "big")
        if n > limit:
            raise ValueError(f"message of {n} bytes exceeds the {limit}-byte limit")
        return json.loads(recv_exact(sock, n).decode("utf-8", "surrogatepass"))

    # ------------------------------------------------------------ candidate side

    def candidate_main(request, chan):
        import types
        from collections import Counter, OrderedDict, defaultdict, deque
        from decimal import Decimal
        from fractions import Fraction

        iterators = (
            types.GeneratorType,
            map,
            filter,
            zip,
            enumerate,
            reversed,
            type(iter([])),
            type(iter(())),
            type(iter("")),
            type(iter(range(0))),
            type(iter({})),
            type({}.items()),
            type({}.keys()),
            type({}.values()),
        )
        max_items = 1_000_000

        class Reject(Exception):
            pass

        def encode(value, active=None):
            # plain data only; subclasses of built-in types are read as their base type
            active = set() if active is None else active
            t = type(value)
            if value is None or t is bool or t is str:
                return value
            if t is int or t is float:
                return value
            if isinstance(value, bool):
                return bool(value)
            if (
                t.__module__ == "numpy"
                and hasattr(value, "item")
                and getattr(value, "ndim", 1) == 0
            ):
                return encode(value.item(), active)
            if id(value) in active:
                raise Reject("a recursive structure")
            active.add(id(value))
            try:
                if isinstance(value, Counter):
                    return {
                        "Counter": [
                            [encode(k, active), encode(v, active)] for k, v in dict.items(value)
                        ]
                    }
                if isinstance(value, OrderedDict):
                    return {
                        "OrderedDict": [
                            [encode(k, active), encode(v, active)] for k, v in dict.items(value)
                        ]
                    }
                if isinstance(value, defaultdict):
                    return {
                        "defaultdict": [
                            [encode(k, active), encode(v, active)] for k, v in dict.items(value)
                        ]
                    }
                if isinstance(value, deque):
                    return {"deque": [encode(v, active) for v in list(value)]}
                if isinstance(value, dict):
                    return {
                        "dict": [
                            [encode(k, active), encode(v, active)] for k, v in dict.items(value)
                        ]
                    }
                if isinstance(value, list):
                    return [encode(v, active) for v in list.__iter__(value)]
                if isinstance(value, tuple):
                    return {"tuple": [encode(v, active) for v in tuple.__iter__(value)]}
                if isinstance(value, frozenset):
                    return {"frozenset": [encode(v, active) for v in frozenset.__iter__(value)]}
                if isinstance(value, set):
                    return {"set": [encode(v, active) for v in set.__iter__(value)]}
                if isinstance(value, str):
                    return str.__str__(value)
                if isinstance(value, bytes | bytearray):
                    return {"bytes": bytes(value).decode("latin-1")}
                if isinstance(value, int):
                    return int.__index__(value)
                if isinstance(value, float):
                    return float.__float__(value)
                if isinstance(value, complex):
                    return {"complex": [value.real, value.imag]}
                if t is range:
                    return {"range": [value.start, value.stop, value.step]}
                if t is Fraction:
                    return {"Fraction": [value.numerator, value.denominator]}
                if t is Decimal:
                    return {"Decimal": str(value)}
                if isinstance(value, iterators):
                    items = []
                    for item in value:
                        items.append(encode(item, active))
                        if len(items) > max_items:
                            raise Reject("an iterator of more than a million items")
                    return {"iterator": items}
                raise Reject(f"an object of type {t.__name__!r}, not plain data")
            finally:
                active.discard(id(value))

        def describe(exc):
            try:
                text = str(exc)
            except BaseException:
                text = "?"
            return [type(exc).__name__, text[:1000]]

        ns = {"__name__": "__main__", "__builtins__": __builtins__}
        try:
            exec(compile(request["solution"], "solution.py", "exec"), ns)
        except BaseException as exc:  # SystemExit too: the tests did not run
            send_frame(chan, {"solution_raised": describe(exc)})
            return
        names = {}
        for key, value in list(ns.items()):
            if key.startswith("__"):
                continue
            if isinstance(value, types.ModuleType):
                names[key] = "module:" + str(getattr(value, "__name__", ""))
            else:
                names[key] = "callable" if callable(value) else "value"
        send_frame(chan, {"names": names})
        while True:
            try:
                msg = recv_frame(chan, 1 << 30)
            except EOFError:
                return
            op = msg.get("op")
            if op == "done":
                return
            try:
                if op == "get":
                    value = ns[msg["name"]]
                elif op == "call":
                    args = decode(msg["args"])
                    kwargs = decode(msg["kwargs"])
                    value = ns[msg["name"]](*args, **kwargs)
                else:
                    return
            except BaseException as exc:  # a solution's exception, reported by name
                if isinstance(exc, SystemExit | KeyboardInterrupt):
                    raise
                send_frame(chan, {"raised": describe(exc)})
                continue
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            try:
                reply = {"value": encode(value)}
                if msg.get("mutable"):  # what the call left in its list/dict/set arguments
                    reply["args"] = [encode(a) for a in args]
            except Reject as exc:
                reply = {"rejected": str(exc)}
            except RecursionError:
                reply = {"rejected": "a structure nested too deeply"}
            send_frame(chan, reply)

    # ------------------------------------------------------------ plain-data decoding (both)

    def decode(obj):
        from collections import Counter, OrderedDict, defaultdict, deque
        from decimal import Decimal
        from fractions import Fraction

        t = type(obj)
        if obj is None or t in (bool, int, float, str):
            return obj
        if t is list:
            return [decode(v) for v in obj]
        if t is not dict or len(obj) != 1:
            raise ValueError("malformed plain-data message")
        ((tag, body),) = obj.items()
        if tag == "tuple":
            return tuple(decode(v) for v in body)
        if tag == "set":
            return {decode(v) for v in body}
        if tag == "frozenset":
            return frozenset(decode(v) for v in body)
        if tag in ("dict", "Counter", "OrderedDict", "defaultdict"):
            pairs = [(decode(k), decode(v)) for k, v in body]
            if tag == "Counter":
                return Counter(dict(pairs))
            if tag == "defaultdict":
                return defaultdict(None, pairs)
            return OrderedDict(pairs) if tag == "OrderedDict" else dict(pairs)
        if tag == "deque":
            return deque(decode(v) for v in body)
        if tag == "bytes" and type(body) is str:
            return body.encode("latin-1")
        if tag == "complex":
            return complex(float(body[0]), float(body[1]))
        if tag == "range":
            return range(int(body[0]), int(body[1]), int(body[2]))
        if tag == "Fraction":
            return Fraction(int(body[0]), int(body[1]))
        if tag == "Decimal" and type(body) is str:
            return Decimal(body)
        if tag == "iterator":
            return iter([decode(v) for v in body])
        raise ValueError(f"unknown tag {tag!r} in a plain-data message")

    # ------------------------------------------------------------ harness side (trusted)

    def harness_main(request, chan, result_fd):
        import ast
        import builtins

        def finish(passed, detail=""):
            data = json.dumps({"passed": bool(passed), "detail": detail[:2000]}).encode()
            os.write(result_fd, data)
            os._exit(0)

        def encode_arg(value):
            t = type(value)
            if value is None or t in (bool, int, float, str):
                return value
            if t is list:
                return [encode_arg(v) for v in value]
            if t is tuple:
                return {"tuple": [encode_arg(v) for v in value]}
            if t is dict:
                return {"dict": [[encode_arg(k), encode_arg(v)] for k, v in value.items()]}
            if t is set:
                return {"set": [encode_arg(v) for v in value]}
            if t is frozenset:
                return {"frozenset": [encode_arg(v) for v in value]}
            if t is bytes:
                return {"bytes": value.decode("latin-1")}
            if t is complex:
                return {"complex": [value.real, value.imag]}
            raise TypeError(f"the tests passed a {t.__name__}, which the sandbox does not carry")

        class CandidateError(Exception):
            pass

        def reply(with_args=False):
            try:
                msg = recv_frame(chan, request["max_reply_bytes"])
            except EOFError:
                raise CandidateError("the candidate's process ended before answering") from None
            if "value" in msg:
                value = decode(msg["value"])
                if not with_args:
                    return value
                after = msg.get("args")
                return value, ([decode(a) for a in after] if type(after) is list else None)
            if "raised" in msg:
                name, text = msg["raised"]
                kind = getattr(builtins, str(name), None)
                control = (StopIteration, StopAsyncIteration, GeneratorExit)
                if (
                    isinstance(kind, type)
                    and issubclass(kind, Exception)
                    and not issubclass(kind, control)
                ):
                    raise kind(text)  # control-flow exceptions would end a loop of the tests
                raise RuntimeError(f"{name}: {text}")
            if "rejected" in msg:
                raise CandidateError("returned " + str(msg["rejected"]))
            raise CandidateError("malformed reply")

        def proxy(name):
            def candidate(*args, **kwargs):
                mutable = any(type(a) in (list, dict, set) for a in args)
                send_frame(
                    chan,
                    {
                        "op": "call",
                        "name": name,
                        "args": encode_arg(list(args)),
                        "kwargs": encode_arg(kwargs),
                        "mutable": mutable,
                    },
                )
                if not mutable:
                    return reply()
                value, after = reply(with_args=True)
                # the reference shares the argument objects: in-place changes must show
                for original, new in zip(args, after or ()):
                    if type(original) is type(new) is list:
                        original[:] = new
                    elif type(original) is type(new) and type(new) in (dict, set):
                        original.clear()
                        original.update(new)
                return value

            candidate.__name__ = candidate.__qualname__ = name
            return candidate

        def where(exc):
            tb, line = exc.__traceback__, None
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == "test.py":
                    line = tb.tb_lineno
                tb = tb.tb_next
            try:
                text = str(exc)
            except BaseException:
                text = "?"
            at = f" (test line {line})" if line else ""
            return f"{type(exc).__name__}{at}: {text}"[:1000]

        try:
            first = recv_frame(chan, 1 << 24)
        except (EOFError, ValueError) as exc:
            finish(False, f"the candidate did not start: {exc}")
        if "solution_raised" in first:
            name, text = first["solution_raised"]
            finish(False, f"solution raised {name}: {text}")
        names = first.get("names") if type(first.get("names")) is dict else {}
        mode = request["mode"]
        test_ns = {"__name__": "__wc_tests__", "__builtins__": builtins}
        try:
            tests = [compile(t, "test.py", "exec") for t in request["tests"]]
            if mode == "function":
                # the prompt's helpers (e.g. encode_cyclic) from the trusted prompt; the entry
                # point itself (tests may call it by name) is the candidate's
                exec(compile(request.get("prelude") or "", "prompt.py", "exec"), test_ns)
                entry = request["entry_point"]
                if names.get(entry) != "callable":
                    finish(False, f"the solution does not define {entry}()")
                test_ns[entry] = proxy(entry)
            else:
                exec(compile(request.get("setup") or "", "setup.py", "exec"), test_ns)
            under_test = set(request.get("functions_under_test") or [])
            wanted = set()
            for t in request["tests"]:
                wanted |= {n.id for n in ast.walk(ast.parse(t)) if isinstance(n, ast.Name)}
            for name in sorted(wanted):
                # builtins stay the real ones: a solution's `abs` or `range` must not change
                # what the tests compute (the reference shares one namespace: it would)
                shadows = hasattr(builtins, name) and name not in under_test
                if name in test_ns or name not in names or shadows:
                    continue
                kind = str(names[name])
                if kind == "callable":
                    test_ns[name] = proxy(name)
                elif kind.startswith("module:"):
                    # a module the solution imported (tests use e.g. `math.isclose`):
                    # the harness imports its own copy, standard library or numpy only
                    module = kind[len("module:") :]
                    if module.split(".")[0] in sys.stdlib_module_names | {"numpy"}:
                        test_ns[name] = __import__(module, fromlist=["_"])
                else:
                    send_frame(chan, {"op": "get", "name": name})
                    try:
                        test_ns[name] = reply()
                    except CandidateError:  # not plain data: left undefined (tests may not use it)
                        pass
            for t in tests:
                exec(t, test_ns)
            if mode == "function":
                check_fn = test_ns.get("check")
                if not callable(check_fn):
                    finish(False, "the tests define no check()")
                check_fn(test_ns[entry])
        except CandidateError as exc:
            finish(False, str(exc))
        except BaseException as exc:
            finish(False, where(exc))
        try:
            send_frame(chan, {"op": "done"})
        except OSError:
            pass
        finish(True)

    # ------------------------------------------------------------ per-program child

    def child(request, fds):
        if role == "harness":
            chan_fd, result_fd = fds
            close_other_fds({chan_fd, result_fd})
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            chan = socket.socket(fileno=chan_fd)
            try:
                harness_main(request, chan, result_fd)
            finally:
                os._exit(1)
        chan_fd, out_fd = fds
        close_other_fds({chan_fd, out_fd})
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        fresh = config.get("namespaces", False)
        if fresh:
            check(libc.unshare(NEWNS | NEWUTS | NEWIPC | NEWNET | NEWPID), "unshare")
        g = os.fork()
        if g:
            _, status = os.waitpid(g, 0)
            os._exit(
                os.waitstatus_to_exitcode(status) & 0xFF
                if os.WIFEXITED(status)
                else 128 + os.WTERMSIG(status)
            )
        # G: pid 1 of the program's own PID namespace
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        workdir = request["workdir"]
        if fresh:
            mount(None, "/", None, MS_REC | MS_PRIVATE, "")
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")
            for folder, size_mb in ((workdir, request["disk_mb"]), ("/tmp", 64), ("/dev/shm", 64)):
                os.makedirs(folder, exist_ok=True)
                mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size_mb}m")
            drop_capabilities()
        h = os.fork()
        if h == 0:
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(devnull)
            os.close(out_fd)
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update(request["env"])
            sys.stdout = open(
                1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
            )
            sys.stderr = open(
                2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
            )
            apply_limits(request["limits"])
            chan = socket.socket(fileno=chan_fd)
            code = 0
            try:
                candidate_main(request, chan)
            except BaseException:
                code = 1
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code)
        os.close(chan_fd)
        os.close(out_fd)
        while True:  # reap everything; the program's end ends the namespace
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                os._exit(1)
            if pid == h:
                os._exit(
                    os.waitstatus_to_exitcode(status) & 0xFF
                    if os.WIFEXITED(status)
                    else 128 + os.WTERMSIG(status)
                )

    # ------------------------------------------------------------ the zygote's loop

    ctl.send(b"R")
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 26, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)
        request = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            try:
                ctl.close()
                child(request, fds)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        ctl.send(b"P")
        try:
            cmd = ctl.recv(16)
        except OSError:
            cmd = b""
        import time

        deadline = time.monotonic() + 0.05  # a program that just ended: keep its own status
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < deadline:
            time.sleep(0.002)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        if cmd != b"K":
            os._exit(0)
        ctl.send(b"E%d" % status)
