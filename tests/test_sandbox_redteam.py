"""Red-team findings against the code-execution sandbox (see README "The sandbox: threat model").

Every test asserts the SAFE behaviour: a test that fails shows an attack that currently works.
Escapes found: builtin names in the tests proxied to the solution, a StopIteration reported by
name ending the tests early, the candidate zygote's root tmpfs (/, /opt/wavecoder-site, /var,
/dev) shared by every later program of the slot (files, planted modules, memory), and the
harness process outside the slot's cgroup with no rlimits (its memory driven by the candidate).
"""

# ruff: noqa: E501  (long lines are inside the hostile programs)

from __future__ import annotations

import glob
import os
import secrets
import textwrap
import threading
import time
from pathlib import Path

import pytest
from wavecoder.evaluate import sandbox as sb

from .conftest import need_isolation

FAST = sb.Limits(wall_s=8.0, cpu_s=8, memory_mb=2048)


def _py(solution: str, tests: list[str], **kw) -> sb.Plan:
    kw.setdefault("limits", FAST)
    return sb.python_plan(textwrap.dedent(solution), [textwrap.dedent(t) for t in tests], **kw)


# ------------------------------------------------------------ fake passes through the harness

FLOAT_TEST = """
def check(candidate):
    assert abs(candidate(1.5) - 0.5) < 1e-6
    assert sorted(candidate([3, 1])) == [1, 3]
check(f)
"""


@pytest.mark.parametrize(
    ("solution", "tests", "kw"),
    [
        # `abs` and `sorted` in the tests become proxies to the solution's functions
        (
            "def f(x):\n    return 42\ndef abs(x):\n    return 0\ndef sorted(x):\n    return [1, 3]\n",
            [FLOAT_TEST],
            {"mode": "function", "entry_point": "f"},
        ),
        # MBPP style: `set(...) == set(...)` with the solution's `set`
        (
            "def f(x):\n    return 42\nset = lambda *a: 0\n",
            ["assert set(f(1)) == set([1, 2])"],
            {"mode": "script"},
        ),
        # a loop over the solution's `range`: no assertion runs at all
        (
            "def f(x):\n    return -1\ndef range(*a):\n    return []\n",
            ["for i in range(10):\n    assert f(i) == i * i"],
            {"mode": "script"},
        ),
    ],
    ids=["abs-sorted", "set", "range"],
)
def test_py_builtins_used_by_the_tests_are_not_the_solutions(one_slot, solution, tests, kw):
    """A wrong solution defining `abs`/`set`/`range`: the tests must keep the real builtins
    (the harness binds every name the tests use that the solution defines to a proxy)."""
    out = one_slot.run(_py(solution, tests, **kw))
    assert out.verdict == "failed", out


def test_py_stop_iteration_reported_by_name_does_not_end_the_tests(one_slot):
    """The candidate raises StopIteration; the harness re-raises the builtin of that name, and
    inside `map` it ends the iteration: `all(map(...))` is then True."""
    solution = "def f(x):\n    raise StopIteration\n"
    out = one_slot.run(
        _py(solution, ["assert all(map(lambda x: f(x) == x + 1, [1, 2, 3]))"], mode="script")
    )
    assert out.verdict == "failed", out


def test_py_crafted_frames_on_the_channel_do_not_pass(one_slot):
    """(Contained) the solution writes its own frames on the channel: claims names, answers
    the harness's requests with bogus values and exception names."""
    solution = """
        import sys
        _fr = sys._getframe(1)
        _chan, _send, _recv = _fr.f_locals["chan"], _fr.f_locals["send_frame"], _fr.f_locals["recv_frame"]
        _send(_chan, {"names": {"f": "callable", "check": "module:unittest.mock", "candidate": "module:builtins"}})
        for _reply in ({"raised": ["SystemExit", "0"]}, {"raised": ["GeneratorExit", ""]}, {"value": {"iterator": []}}, {"value": None}):
            try:
                _recv(_chan, 1 << 20)
            except Exception:
                break
            _send(_chan, _reply)
        import os
        os._exit(0)
    """
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\ncheck(f)\n"
    out = one_slot.run(_py(solution, [test], mode="function", entry_point="f"))
    assert out.verdict == "failed", out


# ------------------------------------------------------------ a later program sees an earlier one


def test_py_files_left_on_the_root_do_not_reach_the_next_sample(one_slot):
    need_isolation(one_slot)
    mark = "rt" + secrets.token_hex(4)
    places = ["/", "/var/", "/dev/", "/opt/", "/opt/wavecoder-site/", "/w/", "/tmp/", "/dev/shm/"]
    writer = f"""
        for _d in {places!r}:
            try:
                open(_d + "{mark}", "w").write("{mark}")
            except OSError:
                pass
        def f(x):
            return 1
    """
    assert one_slot.run(_py(writer, ["assert f(1) == 1"], mode="script")).verdict == "passed"
    reader = f"""
        import os
        print("SEEN", [d for d in {places!r} if os.path.exists(d + "{mark}")])
        def f(x):
            return 1
    """
    out = one_slot.run(_py(reader, ["assert f(1) == 1"], mode="script"))
    assert "SEEN []" in out.output, out.output


def test_py_module_planted_by_an_earlier_sample_does_not_run_in_the_next(one_slot):
    """Sample A (right) plants `calendar.py` in /opt/wavecoder-site (first on sys.path, on the
    zygote's shared root tmpfs); sample B (wrong) imports calendar: A's code runs in B, reads
    B's source and swaps B's function for the right one: B passes."""
    need_isolation(one_slot)
    planter = (
        'open("/opt/wavecoder-site/calendar.py", "w").write("""\n'
        "import sys, threading, time\n"
        "_fr = sys._getframe()\n"
        'while _fr is not None and "ns" not in _fr.f_locals:\n'
        "    _fr = _fr.f_back\n"
        "if _fr is not None:\n"
        '    _ns = _fr.f_locals["ns"]\n'
        '    print("PLANTED saw:", repr(_fr.f_locals["request"]["solution"])[:60])\n'
        "    def _swap():\n"
        '        while "f" not in _ns:\n'
        "            time.sleep(0.001)\n"
        '        _ns["f"] = lambda x: x + 1\n'
        "    threading.Thread(target=_swap, daemon=True).start()\n"
        "def isleap(y):\n"
        "    return False\n"
        '""")\n'
        "def f(x):\n"
        "    return x + 1\n"
    )
    tests = ["assert f(1) == 2\nassert f(41) == 42"]
    one_slot.run(_py(planter, tests, mode="script"))  # the root is read-only now: it fails
    wrong = "import calendar\ndef f(x):\n    return 0\n"
    out = one_slot.run(_py(wrong, tests, mode="script"))
    assert "PLANTED" not in out.output, out
    assert out.verdict == "failed", out


def test_py_memory_left_on_the_root_tmpfs_does_not_starve_the_next_sample(one_slot):
    """1.3 GB of files on the candidate zygote's root tmpfs stay charged to the slot's cgroup
    after the program ends: the next honest program (400 MB) no longer fits in 1.5 GB."""
    need_isolation(one_slot)
    filler = """
        for _i in range(22):
            try:
                with open(f"/opt/fill{_i}", "wb") as _fh:
                    for _ in range(60):
                        _fh.write(b"x" * (1 << 20))
            except OSError:
                break
        def f(x):
            return 1
    """
    one_slot.run(_py(filler, ["assert f(1) == 1"], mode="script"))
    honest = "def f(x):\n    data = bytearray(400 * 1024 * 1024)\n    return len(data) >> 20\n"
    out = one_slot.run(_py(honest, ["assert f(1) == 400"], mode="script"))
    assert out.verdict == "passed", out


def test_py_root_tmpfs_writes_are_bounded_by_the_disk_cap(one_slot):
    """The stated cap is 256 + 64 + 64 MB per Python program; / is an uncapped tmpfs."""
    need_isolation(one_slot)
    writer = """
        _n = 0
        for _i in range(12):
            try:
                with open(f"/opt/big{_i}", "wb") as _fh:
                    for _ in range(60):
                        _fh.write(b"x" * (1 << 20))
                        _n += 1
            except OSError:
                break
        print("WROTE_MB", _n)
        def f(x):
            return 1
    """
    out = one_slot.run(_py(writer, ["assert f(1) == 1"], mode="script"))
    written = int(out.output.split("WROTE_MB")[1].split()[0]) if "WROTE_MB" in out.output else 0
    assert written <= 384, f"{written} MB written outside the capped tmpfs"


# ------------------------------------------------------------ memory outside the slot's cgroup


def _watch_slot_processes(uid: int, stop: threading.Event, seen: dict) -> None:
    while not stop.is_set():
        for status in glob.glob("/proc/[0-9]*/status"):
            pid = status.split("/")[2]
            try:
                fields = dict(
                    line.split(":", 1)
                    for line in Path(status).read_text().splitlines()
                    if ":" in line
                )
                if int(fields["Uid"].split()[0]) != uid or "VmRSS" not in fields:
                    continue
                memcg = next(
                    line.split(":", 2)[2]
                    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                    if ":memory:" in line or line.startswith("0::")
                )
            except (OSError, ValueError, KeyError, StopIteration):
                continue
            rss = int(fields["VmRSS"].split()[0]) * 1024
            key = (pid, memcg)
            seen[key] = max(seen.get(key, 0), rss)
        time.sleep(0.05)


def test_py_candidate_cannot_drive_harness_memory_outside_the_cgroup(one_slot):
    """The harness runs as the slot uid but outside the slot's cgroup, with no rlimits; the
    candidate answers a `get` with a 30 MB frame of empty lists: ~700 MB in the harness."""
    need_isolation(one_slot)
    solution = """
        import sys
        _fr = sys._getframe(1)
        _chan, _send, _recv = _fr.f_locals["chan"], _fr.f_locals["send_frame"], _fr.f_locals["recv_frame"]
        _data = ('{"value": [' + ",".join(["[]"] * 10_000_000) + ']}').encode()
        def f(x):
            return 1
        _send(_chan, {"names": {"f": "callable", "check": "value"}})
        _recv(_chan, 1 << 20)
        _chan.sendall(len(_data).to_bytes(8, "big") + _data)
        import time
        time.sleep(6)
    """
    test = "def check(candidate):\n    assert candidate(1) == 2\ncheck(f)\n"
    one_slot.run(
        _py("def f(x):\n    return 2\n", [test], mode="function", entry_point="f")
    )  # zygotes up
    slot = one_slot._slots[0]
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(
        target=_watch_slot_processes, args=(slot.uid, stop, seen), daemon=True
    )
    watcher.start()
    try:
        out = one_slot.run(_py(solution, [test], mode="function", entry_point="f"))
    finally:
        stop.set()
        watcher.join()
    assert out.verdict != "passed", out
    slot_cgroup = f"{one_slot.base.name}-s0"
    outside = {k: v for k, v in seen.items() if slot_cgroup not in k[1]}
    assert all(v < 300 * 1024**2 for v in outside.values()), {
        f"pid {k[0]} in {k[1]}": f"{v >> 20} MB" for k, v in outside.items()
    }


# ------------------------------------------------------------ contained


def test_py_daemon_does_not_outlive_its_run(one_slot):
    """(Contained) a double-forked, setsid'd child of the candidate is gone after run()."""
    need_isolation(one_slot)
    solution = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        def f(x):
            return 1
    """
    before = _slot_pids(one_slot)
    one_slot.run(_py(solution, ["assert f(1) == 1"], mode="script"))
    time.sleep(0.3)
    zygotes = set()
    for slot in one_slot._slots.values():
        for z in (slot.candidate, slot.harness):
            if z is not None:
                zygotes |= {z.proc.pid, *_descendants(z.proc.pid)}
    left = _slot_pids(one_slot) - before - zygotes
    assert not left, left


def _slot_pids(box: sb.Sandbox) -> set[int]:
    uids = {s.uid for s in box._slots.values()}  # this box's only: other runs may be live
    found = set()
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            text = Path(status).read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) in uids and not fields["State"].strip().startswith("Z"):
            found.add(int(status.split("/")[2]))
    return found


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in glob.glob(f"/proc/{p}/task/*/children"):
            try:
                kids = [int(x) for x in Path(task).read_text().split()]
            except OSError:
                continue
            out |= set(kids)
            todo += kids
    return out


def test_host_canaries_are_not_readable(one_slot):
    """(Contained) secrets in /root and /work: not visible to Python or C++ programs."""
    need_isolation(one_slot)
    secret = "RTCANARY" + secrets.token_hex(8)
    paths = [Path("/root") / f"rt-canary-{secret[-6:]}", Path("/work") / f"rt-canary-{secret[-6:]}"]
    made = []
    try:
        for p in paths:
            if p.parent.is_dir():
                p.write_text(secret)
                os.chmod(p, 0o644)
                made.append(p)
        names = [str(p) for p in made]
        py = f"""
            for _p in {names!r}:
                try:
                    print(open(_p).read())
                except OSError:
                    pass
            def f(x):
                return 1
        """
        out = one_slot.run(_py(py, ["assert f(1) == 1"], mode="script"))
        assert secret not in out.output + out.detail
        ok, _ = one_slot.language_status("cpp")
        if ok:
            opens = "".join(
                f'{{ FILE* f = fopen("{n}", "r"); char b[64] = {{0}}; if (f) {{ fgets(b, 63, f); puts(b); }} }}\n'
                for n in names
            )
            out = one_slot.run(
                sb.cpp_plan("#include <cstdio>\nint main() {\n" + opens + "return 1;\n}\n")
            )
            assert secret not in out.output + out.detail
    finally:
        for p in made:
            p.unlink()


def test_cpp_files_left_on_the_root_do_not_reach_the_next_program(one_slot):
    """(Contained) compiled programs get a fresh bubblewrap root per step."""
    need_isolation(one_slot)
    ok, reason = one_slot.language_status("cpp")
    if not ok:
        pytest.skip(reason)
    mark = "rt" + secrets.token_hex(4)
    write = (
        "#include <cstdio>\nint main() {\n"
        + "".join(
            f'{{ FILE* f = fopen("{d}{mark}", "w"); if (f) fclose(f); }}\n'
            for d in ("/", "/var/", "/dev/", "/tmp/")
        )
        + "return 1;\n}\n"
    )
    one_slot.run(sb.cpp_plan(write))
    read = (
        "#include <cstdio>\nint main() {\n"
        + "".join(
            f'{{ FILE* f = fopen("{d}{mark}", "r"); if (f) puts("SEEN {d}"); }}\n'
            for d in ("/", "/var/", "/dev/", "/tmp/")
        )
        + "return 1;\n}\n"
    )
    out = one_slot.run(sb.cpp_plan(read))
    assert "SEEN" not in out.output, out.output
