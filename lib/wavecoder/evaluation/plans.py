"""What to run for each language: the files, compile steps and run step of a program.

The plans (`python_plan`, `js_plan` ... `rust_plan`) take the exact program the reference
metric (code_eval_octopack, behind bigcode-evaluation-harness) executes and run it as it does:
its compiler and flags, its pass rule (JS: no output at all; the others: exit status 0; Go:
the vet checks of `go test` too), and the npm packages and crates it needs
(`scripts/toolchains.sh`). `sandbox.Sandbox` runs them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .toolchains import EXTRAS


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
) -> Plan:
    """`function` mode: tests define check(candidate); `script` mode: tests are statements."""
    import marshal

    spec = {
        "mode": mode,
        "solution": solution,
        "tests": tests,
        "entry_point": entry_point,
        "prelude": prelude,
        "setup": setup,
    }
    return Plan(
        "python",
        {"spec.bin": marshal.dumps(spec)},
        Step(["{python}", "-I", "-B", "-c", "{harness}", "spec.bin"], limits),
    )


JS_RUNNER = r"""'use strict';
const fs = require('fs');
let token = '';
try { token = fs.readFileSync(3, 'utf8').trim(); fs.closeSync(3); } catch (e) { process.exit(3); }
const write = fs.writeSync;
const strictAssert = function assert(cond, ...msg) {
  if (!cond) { throw new Error('Assertion failed' + (msg.length ? ': ' + msg.join(' ') : '')); }
};
Object.defineProperty(console, 'assert',
  { value: strictAssert, writable: false, configurable: false });
// the namespaces tests compare through stay as they are; prototypes are left writable (frozen,
// `X.prototype.toString = ...` throws: js-md5 does that, and so may a solution)
for (const o of [JSON, Math, console, Object, Array, String, Number, Boolean]) {
  Object.freeze(o);
}
require('./test.js');
write(4, 'PASS ' + token + '\n');
process.exit(0);
"""

JAVA_RUNNER = r"""public class WcRunner {
    public static void main(String[] args) throws Exception {
        byte[] buf = new byte[256];
        int used = 0;
        try (java.io.FileInputStream in = new java.io.FileInputStream("/dev/fd/3")) {
            int n;  // a pipe: no readAllBytes (it seeks)
            while (used < buf.length && (n = in.read(buf, used, buf.length - used)) > 0) used += n;
        }
        byte[] token = java.util.Arrays.copyOf(buf, used);
        Main.main(args);
        try (java.io.FileOutputStream out = new java.io.FileOutputStream("/dev/fd/4")) {
            out.write(("PASS " + new String(token).trim() + "\n").getBytes());
        }
        System.exit(0);
    }
}
"""

# Linked with `-Wl,--wrap=main`: the C runtime calls __wrap_main, which runs the program's own,
# unrenamed main (so `int main(){...}` keeps its implicit `return 0`) and writes the token only
# when main returned 0: the metric passes a C++ program on exit status 0.
CPP_RUNNER = r"""#include <string.h>
#include <unistd.h>
extern "C" int __real_main(int, char **, char **);
// plain zero-initialised storage: a std::string would be re-constructed after this runs
static char __wc_token[300];
__attribute__((constructor(101))) static void __wc_read_token() {
    memcpy(__wc_token, "PASS ", 5);
    size_t used = 5;
    ssize_t n;
    while (used < 280 && (n = read(3, __wc_token + used, 280 - used)) > 0) used += (size_t)n;
    close(3);
    __wc_token[used++] = '\n';
}
extern "C" int __wrap_main(int argc, char **argv, char **envp) {
    int rc = __real_main(argc, argv, envp);
    if (rc == 0 && write(4, __wc_token, strlen(__wc_token)) < 0) return 2;
    return rc;
}
"""

GO_ASSERT_SHIM = r"""// Package assert: the part of github.com/stretchr/testify/assert that
// HumanEvalPack's Go tests use (New, Equal with testify's ObjectsAreEqual semantics),
// since testify cannot be downloaded offline.
package assert

import (
	"bytes"
	"reflect"
	"testing"
)

type Assertions struct{ t *testing.T }

func New(t *testing.T) *Assertions { return &Assertions{t} }

func ObjectsAreEqual(expected, actual interface{}) bool {
	if expected == nil || actual == nil {
		return expected == actual
	}
	exp, ok := expected.([]byte)
	if !ok {
		return reflect.DeepEqual(expected, actual)
	}
	act, ok := actual.([]byte)
	if !ok {
		return false
	}
	return bytes.Equal(exp, act)
}

func (a *Assertions) Equal(expected, actual interface{}, msgAndArgs ...interface{}) bool {
	a.t.Helper()
	if !ObjectsAreEqual(expected, actual) {
		a.t.Errorf("Not equal: expected %#v, actual %#v", expected, actual)
		return false
	}
	return true
}

func Equal(t *testing.T, expected, actual interface{}, msgAndArgs ...interface{}) bool {
	t.Helper()
	return New(t).Equal(expected, actual, msgAndArgs...)
}
"""

# Imported (blank) by the program's package, so it is initialised before any of the program's
# code runs: it takes the token from fd 3 and closes it.
_GO_TOKEN_PKG = "wavecoder/wctoken"
GO_TOKEN_SOURCE = r"""package wctoken

import "os"

var token = read()

func read() string {
	f := os.NewFile(3, "token")
	buf := make([]byte, 256)
	n, _ := f.Read(buf)
	f.Close()
	return string(buf[:n])
}

// Passed writes the end-of-tests line.
func Passed() {
	out := os.NewFile(4, "result")
	out.Write([]byte("PASS " + token + "\n"))
}
"""

RUST_SENTINEL = r"""
#[cfg(test)]
mod zzzz_wc_sentinel {
    #[test]
    fn zzzz_wc_sentinel() {
        use std::io::{Read, Write};
        use std::os::unix::io::FromRawFd;
        let mut token = String::new();
        let mut input = unsafe { std::fs::File::from_raw_fd(3) };
        input.read_to_string(&mut token).ok();
        let mut out = unsafe { std::fs::File::from_raw_fd(4) };
        out.write_all(format!("PASS {}\n", token.trim()).as_bytes()).ok();
    }
}
"""


# ---- the plans: each takes the exact program the reference metric executes,
# `candidate + "\n" + "\n" + doc["test"]` (candidate = the harness's `process_results` fix-ups),
# and runs it the way code_eval_octopack does (file names, compiler, pass rule), plus our token.

CPP_STD = "c++11"  # the metric: `g++ -std=c++11 test.cpp -lcrypto -lssl`, then ./a.out


def js_plan(program: str) -> Plan:
    """`node test.js`; the metric passes it when it printed nothing at all, on stdout or stderr
    (a failed `console.assert` prints; its exit status is not looked at). npm packages that the
    references require (js-md5) come from `toolchain_dir()` through NODE_PATH."""
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
    """`javac Main.java` and `java -cp . Main` (through our runner); passes on exit status 0."""
    jflags = ["-J-Xmx768m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1"]
    return Plan(
        "java",
        {"Main.java": program, "WcRunner.java": JAVA_RUNNER},
        Step(
            ["{java}", "-Xmx768m", "-Xss8m", "-XX:+UseSerialGC", "-cp", ".", "WcRunner"],
            RUN_LIMITS,
        ),
        [
            Step(
                ["{javac}", *jflags, "-nowarn", "-encoding", "UTF-8", "Main.java", "WcRunner.java"],
                COMPILE_LIMITS,
            )
        ],
    )


def cpp_plan(program: str) -> Plan:
    """`g++ -std=c++11 test.cpp -lcrypto -lssl` and `./a.out`; passes on exit status 0. The
    program is compiled as it is (its own `main`); our runner wraps `main` at link time."""
    missing = [
        h
        for h in re.findall(r"#include\s*<([^>]+)>", program)
        if "/" in h and not any(Path(d, h).exists() for d in ("/usr/include", "/usr/local/include"))
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
            )
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
        Step(["./program", "-test.v", "-test.paniconexit0", "-test.timeout=20s"], RUN_LIMITS),
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
            Step(["{vet}", *GO_TEST_VET_FLAGS, "./vet.cfg"], COMPILE_LIMITS),
            Step(
                [
                    "{compile}",
                    "-p",
                    "main",
                    "-complete",
                    "-I",
                    "{gopkg}",
                    "-I",
                    ".",
                    "-o",
                    "wc_main.a",
                    "wc_main.go",
                ],
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
    listed = ", ".join(f'{{Name: "{t}", F: wcprog.{t}}}' for t in tests)
    return f"""package main

import (
    wcos "os"
    wctesting "testing"
    wctestdeps "testing/internal/testdeps"
    wctoken "{_GO_TOKEN_PKG}"
    wcprog "{_GO_PKG_PATH}"
)

func main() {{
    m := wctesting.MainStart(wctestdeps.TestDeps{{}},
        []wctesting.InternalTest{{{listed}}}, nil, nil, nil)
    if m.Run() != 0 {{
        wcos.Exit(1)
    }}
    wctoken.Passed()
    wcos.Exit(0)
}}
"""


def rust_plan(program: str) -> Plan:
    """`cargo check` then `cargo test` of the program as `src/bin/test.rs`, with the metric's
    crates (rand, regex, md5: built once by scripts/toolchains.sh; every Rust declaration `use`s
    them). Here: a type-check as a binary (`fn main` is needed), then the test build with the dev
    profile's settings; passes when every test passed."""
    externs = [x for n in ("rand", "regex", "md5") for x in ("--extern", f"{n}={{extern_{n}}}")]
    common = ["{rustc}", "--edition", "2021", "--crate-name", "test", "-A", "warnings"]
    deps = [*externs, "-L", "dependency={crate_deps}"]
    return Plan(
        "rust",
        {"program.rs": program + "\n" + RUST_SENTINEL},
        Step(["./program", "--test-threads=1", "-q"], RUN_LIMITS),
        [
            Step(
                [*common, "--crate-type", "bin", "--emit=metadata", *deps, "-o", "check.rmeta"]
                + ["program.rs"],
                COMPILE_LIMITS,
            ),
            Step(
                [*common, "--test", *deps, "-C", "opt-level=0", "-C", "debuginfo=0"]
                + ["-C", "debug-assertions=on", "-C", "overflow-checks=on"]
                + ["-o", "program", "program.rs"],
                COMPILE_LIMITS,
            ),
        ],
        needs=("rust-crates",),
    )
