"""The sandbox: isolation, limits, verdicts, and programs written to escape or fool it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from wavecoder.evaluate import sandbox as sb
from wavecoder.evaluate import toolchains

SOLUTION_OK = "def add(a, b):\n    return a + b\n"
TESTS = [
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
]


@pytest.fixture(scope="module")
def box():
    with sb.Sandbox(workers=2) as sandbox:
        yield sandbox


def run_py(box, solution: str, wall_s: float = 5.0, tests=TESTS, mode="function", **kw):
    limits = sb.Limits(wall_s=wall_s, cpu_s=int(wall_s) + 1, memory_mb=1024)
    plan = sb.python_plan(
        textwrap.dedent(solution), tests, mode=mode, entry_point="add", limits=limits, **kw
    )
    return box.run(plan)


def test_correct_and_wrong_solution(box):
    assert run_py(box, SOLUTION_OK).verdict == "passed"
    wrong = run_py(box, "def add(a, b):\n    return a - b\n")
    assert wrong.verdict == "failed"
    assert "AssertionError" in wrong.detail


def test_syntax_error_and_missing_function(box):
    assert run_py(box, "def add(a, b) return a\n").verdict == "failed"
    assert "does not define" in run_py(box, "def other():\n    pass\n").detail


HOSTILE = {
    "infinite_loop": "def add(a, b):\n    while True:\n        pass\n",
    "sleep_forever": "import time\ndef add(a, b):\n    time.sleep(100)\n",
    "exit0_toplevel": "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n",
    "os_exit0_toplevel": "import os\nos._exit(0)\n",
    "os_exit0_in_call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "sys_exit0_in_call": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "print_fake_pass": (
        "import sys\nprint('PASS 0123')\nsys.stdout.flush()\nimport os\nos._exit(0)\n"
    ),
    "write_fd4": "import os\nos.write(4, b'PASS x\\n')\nos._exit(0)\n",
    "eq_always_true": (
        "class T:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return T()\n"
    ),
    "int_subclass_eq": (
        "class I(int):\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return I(0)\n"
    ),
    "list_of_fakes": (
        "class T:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return [T()]\n"
    ),
    "generator_of_fakes": (
        "class T:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    yield T()\n"
    ),
    "patch_assertion_error": (
        "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
        "def add(a, b):\n    return 0\n"
    ),
    "patch_builtins_print_and_exit": (
        "import builtins, sys\nbuiltins.print = lambda *a, **k: None\n"
        "sys.exit = lambda *a: None\ndef add(a, b):\n    return 0\n"
    ),
    "redefine_check": "def check(c):\n    pass\ndef add(a, b):\n    return 0\n",
    "patch_math": (
        "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 0\n"
    ),
    "frame_walk": (
        "import sys\ndef add(a, b):\n    f = sys._getframe(0)\n"
        "    while f:\n        f.f_globals.pop('check', None); f = f.f_back\n    return 0\n"
    ),
    "traceback_frame": (
        "def add(a, b):\n    try:\n        1/0\n    except Exception as e:\n"
        "        f = e.__traceback__.tb_frame.f_back\n        print(f and f.f_locals)\n"
        "    return 0\n"
    ),
    "gc_walk": ("import gc\ndef add(a, b):\n    print(len(gc.get_objects()))\n    return 0\n"),
    "settrace": ("import sys\nsys.settrace(lambda *a: None)\ndef add(a, b):\n    return 0\n"),
    "ctypes": "import ctypes\ndef add(a, b):\n    return ctypes.c_int(a + b)\n",
    "read_proc_mem": ("open('/proc/self/mem', 'rb')\ndef add(a, b):\n    return 0\n"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])\ndef add(a, b):\n    return 0\n"),
    "network": (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n"
        "def add(a, b):\n    return a + b\n"
    ),
    "alloc_10gb": "x = bytearray(10 * 1024**3)\ndef add(a, b):\n    return a + b\n",
    "print_gigabyte": (
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
        "def add(a, b):\n    return a + b\n"
    ),
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)\ndef add(a, b):\n    return 0\n",
    "recursion_crash": (
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_python_never_passes(box, name):
    outcome = run_py(box, HOSTILE[name], wall_s=4.0)
    assert outcome.verdict != "passed", (name, outcome)
    assert outcome.verdict in sb.VERDICTS


def test_hostile_timeouts_are_timeouts(box):
    assert run_py(box, HOSTILE["infinite_loop"], wall_s=2.0).verdict == "timeout"
    assert run_py(box, HOSTILE["sleep_forever"], wall_s=2.0).verdict == "timeout"


def test_output_is_capped(box):
    outcome = run_py(box, HOSTILE["print_gigabyte"], wall_s=10.0)
    assert outcome.verdict == "failed" and "output limit" in outcome.detail
    assert len(outcome.output) < 10_000


def test_parent_and_outside_files_survive(box, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o777)  # even where the sandbox could write, it must not delete
    code = f"""
    import os, shutil
    for f in ({str(victim)!r},):
        try: os.remove(f)
        except Exception as e: print(e)
    try: shutil.rmtree({str(tmp_path)!r})
    except Exception as e: print(e)
    try: os.kill(os.getppid(), 9)
    except Exception as e: print(e)
    def add(a, b):
        return a + b
    """
    outcome = run_py(box, code)
    assert victim.read_text() == "keep me"
    assert outcome.verdict == "passed"  # denied operations are caught by the solution itself


def test_fork_bomb_in_c_is_contained(box):
    if not box.language_status("cpp")[0]:
        pytest.skip("g++ not installed")
    program = "#include <unistd.h>\nint main(){ while (1) fork(); }\n"
    plan = sb.cpp_plan(program)
    plan.run.limits = sb.Limits(wall_s=3.0, cpu_s=3)
    outcome = box.run(plan)
    assert outcome.verdict in ("timeout", "failed")
    assert box.run(sb.cpp_plan("#include <assert.h>\nint main(){ assert(1); }\n")).passed


def test_c_exit_zero_before_tests_fails(box):
    if not box.language_status("cpp")[0]:
        pytest.skip("g++ not installed")
    program = textwrap.dedent(
        """
        #include <stdlib.h>
        #include <assert.h>
        static int early = (exit(0), 0);
        int main(){ assert(1 == 2); }
        """
    )
    assert box.run(sb.cpp_plan(program)).verdict == "failed"


def test_no_network_and_no_capabilities(box):
    if not box.bwrap:
        pytest.skip(f"no bubblewrap sandbox here: {box.bwrap_problem}")
    code = """
    import os, socket
    def add(a, b):
        status = open("/proc/self/status").read()
        assert "NoNewPrivs:\\t1" in status, status
        assert "CapEff:\\t0000000000000000" in status, status
        assert "CapBnd:\\t0000000000000000" in status, status
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=1)
            return 0
        except OSError:
            pass
        assert [n for _, n in socket.if_nameindex()] in (["lo"], [])
        return a + b
    """
    outcome = run_py(box, code)
    assert outcome.passed, outcome


def test_missing_toolchain_is_skipped_with_reason(monkeypatch):
    monkeypatch.setattr(toolchains, "_which", lambda name: None)
    found = sb.detect_toolchains()
    assert not found["js"].available and "node" in found["js"].reason
    with sb.Sandbox(workers=1) as box:
        box.toolchains["js"] = found["js"]
        outcome = box.run(sb.js_plan("console.assert(true)"))
    assert outcome.verdict == "sandbox_error" and "skipped" in outcome.detail


def test_js_console_assert_fails_and_exit_is_not_a_pass(box):
    if not box.language_status("js")[0]:
        pytest.skip("node not installed")
    ok = box.run(sb.js_plan("console.assert(1 === 1)"))
    assert ok.passed, ok
    assert box.run(sb.js_plan("console.assert(1 === 2)")).verdict == "failed"
    assert box.run(sb.js_plan("process.exit(0)\nconsole.assert(1 === 2)")).verdict == "failed"
    fake = "console.assert = () => {}\nJSON.stringify = () => 'x'\nconsole.assert(1 === 2)"
    assert box.run(sb.js_plan(fake)).verdict == "failed"


def test_work_dirs_are_removed(box):
    run_py(box, SOLUTION_OK)
    if box.language_status("cpp")[0]:
        box.run(sb.cpp_plan("int main(){ return 0; }\n"))
    assert not any(Path(box.base).glob("slot*/p-*"))


# ---------------------------------------------------------------- the Python zygotes


CANONICAL_STATE_CHECK = """
import math, os, builtins, sys, glob
def add(a, b):
    assert math.pi == 3.141592653589793 and math.isclose(1.0, 1.0 + 1e-12)
    assert builtins.AssertionError is AssertionError and sys.exit is not None
    assert os.listdir(".") == [], os.listdir(".")  # a fresh work dir
    assert not glob.glob("/tmp/*") and not glob.glob("/dev/shm/*")
    return a + b
"""


def _zygote_pids(box) -> tuple[int, int]:
    slot = box._slots[0]
    assert slot.candidate.alive() and slot.harness.alive()
    return slot.candidate.proc.pid, slot.harness.proc.pid


def test_each_program_is_a_fresh_process_of_the_zygote(one_slot):
    probe = "import os\nprint('pid', os.getpid(), os.getppid(), flush=True)\n" + SOLUTION_OK
    first = run_py(one_slot, probe)
    assert first.passed, first
    pids = _zygote_pids(one_slot)
    second = run_py(one_slot, probe)
    assert second.passed and _zygote_pids(one_slot) == pids
    assert one_slot.zygote_stats["started"] == 2  # candidate and harness, once
    if one_slot.bwrap:  # its own PID namespace: pid 2 under its init
        assert first.output.split()[1:3] == ["2", "1"], first.output


HOSTILE_TO_ZYGOTE = {
    "fork_bomb": HOSTILE["fork_bomb"],
    "kill_parent": HOSTILE["kill_parent"],
    "kill_everything": "import os\nos.kill(-1, 9)\n" + SOLUTION_OK,
    "os_exit0_before_asserts": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "infinite_loop": HOSTILE["infinite_loop"],
    "alloc_10gb": HOSTILE["alloc_10gb"],
    "patch_modules": (
        "import math, builtins, sys\nmath.pi = 3\nmath.isclose = lambda *a, **k: False\n"
        "builtins.AssertionError = KeyError\nsys.exit = None\ndef add(a, b):\n    return 0\n"
    ),
    "litter_and_daemon": (
        "import os, time\nopen('left.txt', 'w').write('x')\nopen('/tmp/left', 'w').write('x')\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\n"
        "def add(a, b):\n    return 0\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TO_ZYGOTE))
def test_hostile_program_cannot_corrupt_the_next_run(one_slot, name):
    good = run_py(one_slot, CANONICAL_STATE_CHECK)
    assert good.passed, good
    pids = _zygote_pids(one_slot)
    bad = run_py(one_slot, HOSTILE_TO_ZYGOTE[name], wall_s=2.0)
    assert bad.verdict != "passed", bad
    after = run_py(one_slot, CANONICAL_STATE_CHECK)
    assert after.passed, (name, bad, after)
    assert _zygote_pids(one_slot) == pids  # the program could not kill or change them


def test_dead_zygote_is_replaced(one_slot):
    import signal
    import threading

    assert run_py(one_slot, SOLUTION_OK).passed
    first, _ = _zygote_pids(one_slot)
    os.kill(first, signal.SIGKILL)  # between programs
    assert run_py(one_slot, SOLUTION_OK).passed
    second, _ = _zygote_pids(one_slot)
    assert second != first
    # during a program: the program is run again on a new zygote
    threading.Timer(0.5, os.kill, (second, signal.SIGKILL)).start()
    slow = run_py(one_slot, "import time\ntime.sleep(1.5)\n" + SOLUTION_OK, wall_s=5.0)
    assert slow.passed, slow
    assert _zygote_pids(one_slot)[0] not in (first, second)


def test_honest_programs_may_use_subprocess_and_mock(one_slot):
    code = """
    import subprocess, unittest.mock, sys
    def add(a, b):
        out = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True)
        assert out.stdout == "1\\n", out
        with unittest.mock.patch("os.getcwd", return_value="x"):
            pass
        return a + b
    """
    outcome = run_py(one_slot, code)
    assert outcome.passed, outcome


def test_without_isolation_the_missing_protections_are_named():
    with sb.Sandbox(workers=1, isolate=False) as box:
        assert not box.isolation["bubblewrap"]
        assert any("bubblewrap" in m for m in box.missing_protections)
        assert run_py(box, SOLUTION_OK).passed
        assert run_py(box, "def add(a, b):\n    return a - b\n").verdict == "failed"
    with pytest.raises(RuntimeError, match="require_isolation"):
        sb.Sandbox(workers=1, isolate=False, require_isolation=True)


def test_a_builtin_named_function_under_test_is_the_solutions(one_slot):
    """MBPP/126 defines `sum`: its tests call the solution's; any other builtin stays real."""
    solution = "def sum(a, b):\n    return a * b\n\ndef abs(x):\n    return 0\n"
    tests = ["assert sum(2, 3) == 6\nassert abs(-2) == 2"]
    plan = sb.python_plan(solution, tests, mode="script", functions_under_test=("sum",))
    assert one_slot.run(plan).passed
    plan = sb.python_plan(solution, tests, mode="script")  # `sum` stays the builtin: 5 != 6
    assert one_slot.run(plan).verdict == "failed"
