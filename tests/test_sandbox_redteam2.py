"""Red team, second pass, against the code-execution sandbox (README "The sandbox: threat model").

Every test asserts the SAFE behaviour: a failing test is an attack that works today.

Escapes found (tests fail):
* kernel keyrings: the candidate zygote's user namespace lives as long as the slot, and with it
  the user keyring (`@u`) and user-session keyring (`@us`) of its uid 0: a key added by one
  program is read by every later program of the slot (no seccomp filter, keyctl/add_key
  allowed).
* the evaluating process's session keyring is inherited by every sandbox (Python and
  compiled languages): keys the host session possesses are readable (and writable) inside.
* arguments cross as copies: a solution that mutates its argument where the test checks
  that it did not passes (the reference shares the object and fails it).

Contained (tests pass): a half-sent reply frame (timeout, not passed), stdlib modules with
import side effects bound through the `module:` kind, malformed/hostile frames (Decimal sNaN,
huge ints, Fraction(1, 0), a bare-string first frame), nested user namespaces trying to unmount
the per-program tmpfs and /proc, processes in nested user+PID namespaces outliving run().
"""

# ruff: noqa: E501  (long lines are inside the hostile programs)

from __future__ import annotations

import ctypes
import os
import secrets
import textwrap
import threading
import time

import pytest
from wavecoder.evaluate import sandbox as sb

from .conftest import need_isolation

FAST = sb.Limits(wall_s=6.0, cpu_s=6, memory_mb=2048)


def _py(solution: str, tests: list[str], **kw) -> sb.Plan:
    kw.setdefault("limits", FAST)
    return sb.python_plan(textwrap.dedent(solution), [textwrap.dedent(t) for t in tests], **kw)


# a small keyctl helper for the hostile programs (x86_64 / aarch64 syscall numbers)
KEYS = r'''
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_ADD_KEY, _KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
def _keyctl(*a):
    return _libc.syscall(_KEYCTL, *[ctypes.c_long(x) if isinstance(x, int) else x for x in a])
def _add(spec, desc, data):
    return _libc.syscall(_ADD_KEY, b"user", desc, data, ctypes.c_size_t(len(data)), ctypes.c_int(spec))
def _dump(spec):
    """The payloads of the keys directly in keyring `spec` (-3 session, -4 user, -5 user session)."""
    found = []
    kid = _keyctl(0, spec, 0)
    if kid <= 0:
        return found
    ids = (ctypes.c_int32 * 128)()
    n = _keyctl(11, kid, ids, 512)
    for i in range(max(0, min(n, 512)) // 4):
        buf = ctypes.create_string_buffer(512)
        got = _keyctl(11, ids[i], buf, 512)
        if got > 0:
            found.append(buf.raw[:min(got, 512)])
    return found
'''


# ------------------------------------------------------------ escapes: kernel keyrings


def test_py_keys_left_in_the_user_keyring_do_not_reach_the_next_sample(one_slot):
    """Program A adds keys to @u and @us; program B (next sample, same slot) lists them: the
    zygote's user namespace (and its keyring register) outlives every program."""
    need_isolation(one_slot)
    mark = ("rt2" + secrets.token_hex(6)).encode()
    writer = (
        KEYS
        + f"_add(-4, b'rt2u', {mark!r})\n_add(-5, b'rt2us', {mark!r})\ndef f(x):\n    return 1\n"
    )
    assert one_slot.run(_py(writer, ["assert f(1) == 1"], mode="script")).verdict == "passed"
    reader = KEYS + "print('SEEN', _dump(-4) + _dump(-5) + _dump(-3))\ndef f(x):\n    return 1\n"
    out = one_slot.run(_py(reader, ["assert f(1) == 1"], mode="script"))
    assert "SEEN" in out.output, out
    assert mark.decode() not in out.output, out.output


def test_host_session_keyring_is_not_visible_in_the_sandbox():
    """The evaluating process has a session keyring (any login session with pam_keyinit has
    one): every bwrap sandbox inherits it and possesses its keys (Python and C++ read them)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, bubblewrap and cgroups (the full isolation)")
    secret = ("HOSTKEY" + secrets.token_hex(6)).encode()
    seen: dict[str, str] = {}

    def session() -> None:  # credentials are per thread: only this thread joins the keyring
        libc = ctypes.CDLL(None, use_errno=True)
        add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
        if libc.syscall(keyctl, ctypes.c_long(1), None) < 0:  # JOIN_SESSION_KEYRING, anonymous
            seen["skip"] = "no keyrings here"
            return
        libc.syscall(
            add_key, b"user", b"rt2-host", secret, ctypes.c_size_t(len(secret)), ctypes.c_int(-3)
        )
        with sb.Sandbox(workers=1) as box:
            if not box.bwrap or not box.cgroups:
                seen["skip"] = "no bubblewrap/cgroups"
                return
            reader = KEYS + "print('SEEN', _dump(-3))\ndef f(x):\n    return 1\n"
            out = box.run(_py(reader, ["assert f(1) == 1"], mode="script"))
            seen["python"] = out.output
            ok, _ = box.language_status("cpp")
            if ok:
                cpp = (
                    "#include <cstdio>\n#include <unistd.h>\n#include <sys/syscall.h>\n"
                    "int main() {\n"
                    "  long kid = syscall(SYS_keyctl, 0, -3, 0);\n"
                    "  int ids[64] = {0};\n"
                    "  long n = syscall(SYS_keyctl, 11, kid, ids, sizeof ids);\n"
                    "  for (int i = 0; i < n / 4 && i < 64; i++) {\n"
                    "    char b[256] = {0};\n"
                    '    if (syscall(SYS_keyctl, 11, ids[i], b, 255) > 0) printf("CPPKEY %s\\n", b);\n'
                    "  }\n"
                    "  return 1;\n}\n"
                )
                seen["cpp"] = box.run(sb.cpp_plan(cpp)).output

    t = threading.Thread(target=session)
    t.start()
    t.join()
    if "skip" in seen:
        pytest.skip(seen["skip"])
    leaked = {k: v for k, v in seen.items() if secret.decode() in v}
    assert not leaked, leaked


# ------------------------------------------------------------ escape: arguments are copies


def test_py_argument_mutation_checked_by_the_tests_is_not_hidden(one_slot):
    """The tests check that the function leaves its argument alone; the wrong solution sorts
    it in place. The reference (one process, the same list) fails it; the harness passes a
    copy, so the mutation is invisible and the wrong solution passes."""
    solution = "def smallest(xs):\n    xs.sort()\n    return xs[0]\n"
    test = "data = [3, 1, 2]\nassert smallest(data) == 1\nassert data == [3, 1, 2], 'argument mutated'\n"
    out = one_slot.run(_py(solution, [test], mode="script"))
    assert out.verdict == "failed", out


# ------------------------------------------------------------ contained: the harness's channel


CHANNEL = r"""
import sys, time
_fr = sys._getframe(1)
_chan, _send, _recv = _fr.f_locals["chan"], _fr.f_locals["send_frame"], _fr.f_locals["recv_frame"]
"""


def test_py_half_sent_reply_is_a_timeout_not_a_pass(one_slot):
    """The candidate announces a 1000-byte reply, sends 11 bytes and sleeps: the harness's
    recv blocks until the wall clock; the verdict must not be `passed`."""
    solution = CHANNEL + textwrap.dedent(
        """
        _send(_chan, {"names": {"f": "callable"}})
        _recv(_chan, 1 << 20)
        _chan.sendall((1000).to_bytes(8, "big") + b'{"value": 2')
        time.sleep(30)
        """
    )
    limits = sb.Limits(wall_s=3.0, cpu_s=3, memory_mb=2048)
    out = one_slot.run(_py(solution, ["assert f(1) == 2"], mode="script", limits=limits))
    assert out.verdict == "timeout", out
    # the slot still gives right verdicts afterwards
    assert one_slot.run(
        _py("def f(x):\n    return 2\n", ["assert f(1) == 2"], mode="script")
    ).passed
    assert not one_slot.run(
        _py("def f(x):\n    return 3\n", ["assert f(1) == 2"], mode="script")
    ).passed


@pytest.mark.parametrize(
    "frames",
    [
        [{"value": {"Decimal": "sNaN"}}],
        [{"value": {"Decimal": "NaN"}}],
        [{"value": {"Fraction": ["1", "0"]}}],
        [{"value": {"Fraction": ["9" * 5000, "1"]}}],
        [{"value": {"iterator": [2]}}],
        [{"value": {"defaultdict": [[1, 2]]}}],
        [{"raised": ["StopAsyncIteration", ""]}],
        [{"raised": ["ExceptionGroup", "x"]}],
        [{"raised": ["BaseExceptionGroup", "x"]}],
        [{"raised": ["KeyboardInterrupt", ""]}],
    ],
    ids=lambda f: str(f)[:40],
)
def test_py_hostile_reply_frames_do_not_pass(one_slot, frames):
    """(Contained) crafted replies: values whose comparisons misbehave, huge ints, exception
    names of control-flow or odd constructors, inside tests that swallow some errors."""
    solution = CHANNEL + textwrap.dedent(
        f"""
        _send(_chan, {{"names": {{"f": "callable"}}}})
        for _reply in {frames!r}:
            _recv(_chan, 1 << 20)
            _send(_chan, _reply)
        import os
        os._exit(0)
        """
    )
    test = (
        "try:\n    r = f(1)\nexcept (ArithmeticError, TypeError, ValueError):\n    r = None\n"
        "assert r is not None and r == 2 and not (r != 2)\n"
    )
    out = one_slot.run(_py(solution, [test], mode="script"))
    assert out.verdict != "passed", out


def test_py_raw_first_frames_do_not_pass(one_slot):
    """(Contained) the first frame as a bare string / list / huge int: the harness crashes
    without a verdict, which must read as failed."""
    for raw in (b'"solution_raised names"', b"[1, 2]", b"9" * 5000):
        solution = (
            CHANNEL + f"_chan.sendall(len({raw!r}).to_bytes(8, 'big') + {raw!r})\ntime.sleep(5)\n"
        )
        out = one_slot.run(_py(solution, ["assert f(1) == 2"], mode="script"))
        assert out.verdict == "failed", (raw[:20], out)


@pytest.mark.parametrize(
    "module", ["this", "antigravity", "idlelib.idle", "unittest.mock", "builtins"]
)
def test_py_module_kind_with_import_side_effects_does_not_pass(one_slot, module):
    """(Contained) the solution names a value `m` a module of any stdlib name; the harness
    imports that module for the tests: side effects (printing, a browser, IDLE) stay in the
    harness child and the wrong solution still fails."""
    solution = f"import types\nm = types.ModuleType({module!r})\ndef f(x):\n    return 0\n"
    out = one_slot.run(_py(solution, ["assert m is not None\nassert f(1) == 2"], mode="script"))
    assert out.verdict == "failed", out
    assert one_slot.run(
        _py("def f(x):\n    return 2\n", ["assert f(1) == 2"], mode="script")
    ).passed


# ------------------------------------------------------------ contained: nested namespaces


NEST = r"""
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
def _nest():
    if _libc.unshare(0x10000000 | 0x20000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
        return "no userns"
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/uid_map", "w").write("0 0 1")
    return "nested"
"""


def test_py_nested_userns_cannot_uncover_the_zygotes_mounts(one_slot):
    """(Contained) in a nested user namespace the program has every capability over a copy of
    its mounts: unmounting its own /tmp, /w, /dev/shm or /proc would reveal the zygote's
    (shared by every program of the slot). The copies are locked."""
    need_isolation(one_slot)
    solution = NEST + textwrap.dedent(
        """
        print("STATE", _nest())
        for _t in (b"/proc", b"/tmp", b"/w", b"/dev/shm"):
            if _libc.umount2(_t, 2) == 0:
                print("UNMOUNTED", _t)
        if _libc.mount(b"/", b"/tmp", None, 4096, None) == 0:
            print("UNMOUNTED bind of /")
        def f(x):
            return 1
        """
    )
    out = one_slot.run(_py(solution, ["assert f(1) == 1"], mode="script"))
    assert "STATE" in out.output, out
    assert "UNMOUNTED" not in out.output, out.output


def test_py_processes_in_nested_namespaces_do_not_outlive_the_run(one_slot):
    """(Contained) pid 1 of a nested user + PID namespace, setsid'd and orphaned."""
    need_isolation(one_slot)
    mark = "rt2sleep" + secrets.token_hex(4)
    solution = NEST + textwrap.dedent(
        f"""
        import time
        if os.fork() == 0:
            _nest()
            _libc.unshare(0x20000000)  # CLONE_NEWPID: the next child is pid 1 there
            if os.fork() == 0:
                os.setsid()
                os.execv("/bin/sleep", ["{mark}", "61"])  # argv[0] marks it
            os._exit(0)
        time.sleep(0.5)
        def f(x):
            return 1
        """
    )
    one_slot.run(_py(solution, ["assert f(1) == 1"], mode="script"))
    time.sleep(0.3)
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if mark.encode() in fh.read():
                        left.append(pid)
            except OSError:
                pass
    assert not left, left
