"""What to run for each language: the files, compile steps and run step of a program.

The plans (`python_plan`, `js_plan` ... `rust_plan`) take the exact program the reference
metric (code_eval_octopack, behind bigcode-evaluation-harness) executes and run it as it does:
its compiler and flags, its pass rule (JS: no output at all; the others: exit status 0; Go:
the vet checks of `go test` too), and the npm packages and crates it needs
(`scripts/toolchains.sh`). `sandbox.Sandbox` runs them.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from wavecoder.evaluate.toolchains import EXTRAS


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
    """Files to write into a fresh work dir, compile steps, and the run step.

    `{name}` in a step's argv, in `env` values and in the files named in `templated` is replaced
    by the toolchain's path of that name (`Toolchain.paths`, plus `gopkg` for Go).
    """

    language: str
    files: dict[str, str | bytes]
    run: Step | None
    compile: list[Step] = field(default_factory=list)
    unavailable: str | None = None  # a reason: the program cannot run here (sandbox_error)
    env: dict[str, str] = field(default_factory=dict)  # added to every step's environment
    needs: tuple[str, ...] = ()  # provisioned extras (`EXTRAS`); missing -> sandbox_error
    quiet: bool = False  # any output on stdout/stderr fails the run (the metric's JS rule)
    templated: tuple[str, ...] = ()  # files whose `{name}` placeholders are filled in


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
    functions_under_test: tuple[str, ...] = (),
) -> Plan:
    """`function` mode: tests define check(candidate); `script` mode: tests are statements.

    The sandbox runs the solution and the tests in separate processes (`_pyzygote.py`); the
    tests' builtins stay the real ones unless a builtin's name is one of
    `functions_under_test` (MBPP/126's function is called `sum`)."""
    import marshal

    spec = {
        "mode": mode,
        "solution": solution,
        "tests": tests,
        "entry_point": entry_point,
        "prelude": prelude,
        "setup": setup,
        "functions_under_test": list(functions_under_test),
    }
    return Plan(
        "python",
        {"spec.bin": marshal.dumps(spec)},
        Step(["{python}", "-I", "-B", "-c", "{harness}", "spec.bin"], limits),
    )


# ---- our runners: the sources live in `runners/` (package data), one file each, so that
# editors and linters see them as the code they are; the generated programs are those files.

RUNNERS = Path(__file__).with_name("runners")


@functools.cache
def runner_source(name: str) -> str:
    """The text of `runners/<name>`, exactly as written (no newline translation)."""
    with open(RUNNERS / name, encoding="utf-8", newline="") as handle:
        return handle.read()


# The JS runner (`runner.js`): it takes the token, then runs test.js as a script in a realm of
# its own whose `console` is ours.
JS_RUNNER = runner_source("runner.js")

# In package wavecoder.runner, so that the program's classes (default package: a class `java`,
# `System`, `String`...) are not in scope for it; it reaches `Main` by reflection. javac
# compiles it with the program, as one more file (the metric: `javac Main.java`).
JAVA_RUNNER_PATH = "wavecoder/runner/WcRunner.java"
JAVA_RUNNER = runner_source("WcRunner.java")

# The C/C++ runner: C++ compiles it with the program (as wc_main.cpp), Rust links it as a C
# object; both link with `-Wl,--wrap=main`, so the C runtime calls __wrap_main, which runs the
# program's own, unrenamed main (a C++ `int main(){...}` keeps its implicit `return 0`).
CPP_RUNNER = runner_source("wc_main.c")

# Run after linking (C++, Rust): the runner's .preinit_array entry must be the only one (ELF
# runs .preinit_array first, before any constructor or .init_array entry), and the program may
# define no ifunc (its resolver runs while the loader relocates, before .preinit_array).
# readelf comes with binutils, which g++ and rustc need to link.
NATIVE_CHECK = runner_source("native_check.sh")

GO_ASSERT_SHIM = runner_source("testify_assert.go")

# Imported (blank) by the program's package, so it is initialised before any of the program's
# code (its package-level variables, its init functions): it takes the token from fd 3 and
# closes it. Nothing in it is exported: only our main pulls the token, by linkname; the
# program's package may not refer to it (`GO_CHECK`, on the compiled package).
_GO_TOKEN_PKG = "wavecoder/wctoken"
GO_TOKEN_SOURCE = runner_source("wctoken.go")

# compiled once per Sandbox into its read-only Go package folder (`sandbox._go_packages`)
GO_PACKAGES = {
    "github.com/stretchr/testify/assert": GO_ASSERT_SHIM,
    _GO_TOKEN_PKG: GO_TOKEN_SOURCE,
}

# Run on the compiled program package: it may not define or refer to our packages' symbols (a
# `//go:linkname` to the token's variable or function, or to our main) other than the token
# package's init task.
GO_CHECK = runner_source("go_check.sh")


# ---- the plans: each takes the exact program the reference metric executes,
# `candidate + "\n" + "\n" + doc["test"]` (candidate = the harness's `process_results` fix-ups),
# and runs it the way code_eval_octopack does (file names, compiler, pass rule), plus our token.

CPP_STD = "c++11"  # the metric: `g++ -std=c++11 test.cpp -lcrypto -lssl`, then ./a.out


def _native_check(binary: str) -> Step:
    return Step(["/bin/sh", "-c", NATIVE_CHECK, "sh", binary], COMPILE_LIMITS)


def js_plan(program: str) -> Plan:
    """`node test.js`; the metric passes it when it printed nothing at all, on stdout or stderr
    (a failed `console.assert` prints; its exit status is not looked at). npm packages that the
    references require (js-md5) come from `toolchain_dir()` through NODE_PATH. Our runner runs
    the file as a script in a realm of its own (`JS_RUNNER`): what the program defines or
    patches cannot change the tests' `console.assert`."""
    wanted = set(re.findall(r"""require\(\s*['"]([^'"]+)['"]\s*\)""", program))
    needs = tuple(f"npm:{m}" for m in sorted(wanted) if f"npm:{m}" in EXTRAS)
    return Plan(
        "js",
        {"test.js": program, "runner.js": JS_RUNNER},
        Step(["{node}", "--max-old-space-size=1024", "runner.js"], RUN_LIMITS),
        env={"NODE_PATH": "{node_path}"},
        needs=needs,
        quiet=True,
    )


def java_plan(program: str) -> Plan:
    """`javac Main.java` and `java -cp . Main` (through our runner, which calls `Main.main` by
    reflection); passes on exit status 0."""
    jflags = ["-J-Xmx768m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1"]
    return Plan(
        "java",
        {"Main.java": program, JAVA_RUNNER_PATH: JAVA_RUNNER},
        Step(
            ["{java}", "-Xmx768m", "-Xss8m", "-XX:+UseSerialGC", "-cp", "."]
            + ["wavecoder.runner.WcRunner"],
            RUN_LIMITS,
        ),
        [
            Step(
                ["{javac}", *jflags, "-nowarn", "-encoding", "UTF-8", "Main.java"]
                + [JAVA_RUNNER_PATH],
                COMPILE_LIMITS,
            )
        ],
    )


@functools.cache
def _include_dirs() -> tuple[str, ...]:
    """The system header folders, multiarch ones included (`<sys/types.h>` lives in
    /usr/include/x86_64-linux-gnu on Debian)."""
    found = ["/usr/local/include", "/usr/include"]
    found += [str(p) for p in Path("/usr/include").glob("*-linux-gnu*") if p.is_dir()]
    return tuple(found)


def cpp_plan(program: str) -> Plan:
    """`g++ -std=c++11 test.cpp -lcrypto -lssl` and `./a.out`; passes on exit status 0. The
    program is compiled as it is (its own `main`); our runner wraps `main` at link time and
    reads the token before any of the program's code runs (`CPP_RUNNER`, `NATIVE_CHECK`)."""
    missing = [
        h
        for h in re.findall(r"#include\s*<([^>]+)>", program)
        if "/" in h and not any(Path(d, h).exists() for d in _include_dirs())
    ]
    unavailable = None
    if missing:
        unavailable = f"header {missing[0]} not installed (e.g. Debian libboost-dev, libssl-dev)"
    # the metric always links both; here only where used, so that C++ runs without libssl-dev
    libs = ["-lcrypto", "-lssl"] if "openssl/" in program else []
    return Plan(
        "cpp",
        {"test.cpp": program, "wc_main.cpp": CPP_RUNNER},
        Step(["./a.out"], RUN_LIMITS),
        [
            Step(
                [
                    "{g++}",
                    f"-std={CPP_STD}",
                    "-w",
                    "test.cpp",
                    "wc_main.cpp",
                    "-Wl,--wrap=main",
                    *libs,
                ],
                COMPILE_LIMITS,
            ),
            _native_check("a.out"),
        ],
        unavailable,
    )


# `go test` runs these vet checks first and fails the test on a finding (Go 1.19's list)
GO_TEST_VET_FLAGS = (
    "-atomic",
    "-bool",
    "-buildtags",
    "-errorsas",
    "-ifaceassert",
    "-nilfunc",
    "-printf",
    "-stringintconv",
)
_GO_PKG_PATH = "command-line-arguments"  # what `go test main_test.go` calls the package
_GO_TESTIFY = "github.com/stretchr/testify/assert"
_GO_TEST_FUNC = re.compile(
    r"(?m)^func\s+(Test(?:[^a-z\W]\w*)?)\s*\(\s*(?:\w+\s+)?\*testing\.T\s*\)"
)
GO_RUN_ARGS = ("./program", "-test.v", "-test.paniconexit0", "-test.timeout=20s")


def go_import_paths(program: str) -> list[str]:
    """The packages a Go file imports, in order (single and grouped import declarations)."""
    paths: list[str] = []
    for m in re.finditer(r'(?ms)^import\s*(?:\((.*?)\)|(?:[\w.]+\s+)?"([^"]+)")', program):
        if m.group(2) is not None:
            found = [m.group(2)]
        else:
            found = re.findall(r'"([^"]+)"', re.sub(r"(?m)//.*$", "", m.group(1)))
        paths.extend(p for p in found if p not in paths)
    return paths


def go_plan(program: str) -> Plan:
    """`go test main_test.go` for the whole file, offline: the file is compiled as it is into
    package `command-line-arguments` (as `go test` does; a `func main` in it is fine), vetted with
    the checks `go test` runs, and linked with our main, which runs its `TestXxx` functions
    through `testing.MainStart`. Passes when every test passed (a file without tests, which
    `go test` would pass, is refused here: no reference program lacks them).
    """
    tests = list(dict.fromkeys(_GO_TEST_FUNC.findall(program)))
    package = re.search(r"(?m)^package\s+(\w+)", program)
    imports = go_import_paths(program)
    files: dict[str, str | bytes] = {
        "main_test.go": program,
        # a blank import: the token package is initialised before the program's own code
        "wc_init.go": f"package {package.group(1) if package else 'main'}\n\n"
        f'import _ "{_GO_TOKEN_PKG}"\n',
        "wc_main.go": _go_runner(tests),
        "vet.cfg": json.dumps(
            {
                "ID": _GO_PKG_PATH,
                "Compiler": "gc",
                "Dir": ".",
                "ImportPath": _GO_PKG_PATH,
                "GoFiles": ["main_test.go"],
                "NonGoFiles": [],
                "ImportMap": {p: p for p in imports},
                "PackageFile": {
                    p: "{gopkg}/" + p + ".a" if p == _GO_TESTIFY else "{gostd}/" + p + ".a"
                    for p in imports
                },
                "VetxOnly": False,
                "VetxOutput": "vet.out",
                # a program that does not type-check fails at compile, before vet
                "SucceedOnTypecheckFailure": True,
            },
            indent=1,
        ),
    }
    unavailable = None if tests else "no `func TestXxx(t *testing.T)` in the program"
    return Plan(
        "go",
        files,
        Step(list(GO_RUN_ARGS), RUN_LIMITS),
        [
            Step(
                [
                    "{compile}",
                    "-p",
                    _GO_PKG_PATH,
                    "-complete",
                    "-I",
                    "{gopkg}",
                    "-o",
                    f"{_GO_PKG_PATH}.a",
                    "main_test.go",
                    "wc_init.go",
                ],
                COMPILE_LIMITS,
            ),
            Step(
                ["/bin/sh", "-c", GO_CHECK, "sh", "{compile}", f"{_GO_PKG_PATH}.a"], COMPILE_LIMITS
            ),
            Step(["{vet}", *GO_TEST_VET_FLAGS, "./vet.cfg"], COMPILE_LIMITS),
            Step(
                # not -complete: the runner declares the token puller without a body (linkname)
                ["{compile}", "-p", "main", "-I", "{gopkg}", "-I", ".", "-o", "wc_main.a"]
                + ["wc_main.go"],
                COMPILE_LIMITS,
            ),
            Step(
                ["{link}", "-L", "{gopkg}", "-L", ".", "-o", "program", "wc_main.a"], COMPILE_LIMITS
            ),
        ],
        unavailable,
        env={"GOROOT": "{goroot}"},
        templated=("vet.cfg",),
    )


def _go_runner(tests: list[str]) -> str:
    """Our Go main (`runners/wc_main.go`) with the program's tests and `GO_RUN_ARGS` filled in."""
    listed = ", ".join(f'{{Name: "{t}", F: wcprog.{t}}}' for t in tests)
    args = ", ".join(json.dumps(a) for a in GO_RUN_ARGS)
    source = runner_source("wc_main.go")
    return source.replace("/* WC_ARGS */", args).replace("/* WC_TESTS */", listed)


RUST_RUN_ARGS = ("./program", "--test-threads=1", "-q")


def rust_plan(program: str) -> Plan:
    """`cargo check` then `cargo test` of the program as `src/bin/test.rs`, with the metric's
    crates (rand, regex, md5: built once by scripts/toolchains.sh; every Rust declaration `use`s
    them). Here: a type-check as a binary (`fn main` is needed), then the test build with the dev
    profile's settings, linked with our runner (`CPP_RUNNER` as a C object: it reads the token
    before any of the program's code runs, and writes it when the test harness's main returned
    0, i.e. every test passed)."""
    externs = [x for n in ("rand", "regex", "md5") for x in ("--extern", f"{n}={{extern_{n}}}")]
    common = ["{rustc}", "--edition", "2021", "--crate-name", "test", "-A", "warnings"]
    deps = [*externs, "-L", "dependency={crate_deps}"]
    fixed_args = "-DWC_ARGS=" + ",".join(json.dumps(a) for a in RUST_RUN_ARGS)
    # `#![no_main]` (or `cfg_attr(..., no_main)`) drops the test harness's main: the program's
    # own `extern "C" fn main` would return 0 without running a test. No reference program
    # names it; any that does is refused.
    refused = (
        [
            Step(
                ["/bin/sh", "-c", "echo 'refused: no_main (the test harness must run)'; exit 1"],
                COMPILE_LIMITS,
            )
        ]
        if re.search(r"\bno_main\b", program)
        else []
    )
    return Plan(
        "rust",
        {"program.rs": program, "wc_rt.c": CPP_RUNNER},
        Step(list(RUST_RUN_ARGS), RUN_LIMITS),
        [
            *refused,
            Step(
                [*common, "--crate-type", "bin", "--emit=metadata", *deps, "-o", "check.rmeta"]
                + ["program.rs"],
                COMPILE_LIMITS,
            ),
            # rustc links with `cc`: it is there wherever Rust programs can be built
            Step(
                ["cc", "-c", "-O0", "-fPIC", "-w", fixed_args, "wc_rt.c", "-o", "wc_rt.o"],
                COMPILE_LIMITS,
            ),
            Step(
                [*common, "--test", *deps, "-C", "opt-level=0", "-C", "debuginfo=0"]
                + ["-C", "debug-assertions=on", "-C", "overflow-checks=on"]
                + ["-C", "link-arg=wc_rt.o", "-C", "link-arg=-Wl,--wrap=main"]
                + ["-o", "program", "program.rs"],
                COMPILE_LIMITS,
            ),
            _native_check("program"),
        ],
        needs=("rust-crates",),
    )
