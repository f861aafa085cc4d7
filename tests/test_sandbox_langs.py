"""HumanEvalPack programs in all six languages, run as the reference metric runs them.

The program is the one bigcode-evaluation-harness hands to code_eval_octopack for HumanEvalFix
(tests variant): `candidate + "\\n" + "\\n" + doc["test"]`, where the candidate is the harness's
post-processing and language fix-ups of a generation (`wavecoder.evaluate.reference`); for the
canonical case the generation continues the prompt with the canonical (or buggy) solution.
Canonical solutions pass and buggy ones fail, except where the reference itself does otherwise
(listed below, each with the reason); the full 6 x 164 x 2 run is the slow test.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from typing import Any

import pytest
from wavecoder.evaluate import reference as ref
from wavecoder.evaluate import sandbox as sb

from .conftest import SHARED, shared_file

LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")
_PREFIX = {
    "python": "Python/",
    "js": "JavaScript/",
    "java": "Java/",
    "go": "Go/",
    "cpp": "CPP/",
    "rust": "Rust/",
}

# Reference solutions whose verdict is not a function of the code (left out of the checks).
RANDOM = {
    # check_dict_case ranges over a map and stops after the second key: the verdict follows
    # Go's randomised map iteration order
    "Go/95",
    # Newton's method on 100 random polynomials (rand::thread_rng): it loops forever or misses
    # the 1e-3 bound on about half the runs (seen: 18 timeouts, 4 failures in 40)
    "Rust/32",
}

# Canonical Fix programs the harness itself breaks: the reference fails them too, whatever the
# model writes. The whole reference solution (prompt + canonical solution, same fix-ups) passes.
HARNESS_BROKEN = {
    # a helper the function needs is in the prompt, not in the declaration that the Fix prompt
    # (tests variant) starts from (Python's equivalents, poly, encode_cyclic, encode_shift, are
    # in its declarations)
    "Go/10": "IsPalindrome is only in the prompt",
    "Go/32": "Poly is only in the prompt",
    "Go/38": "EncodeCyclic is only in the prompt",
    "Go/50": "EncodeShift is only in the prompt",
    # remove_last_block cuts at Go's stop words "\nfunc" and "struct", and at the first brace
    # that closes the function
    "Go/72": "helper isPalindrome after the function is cut (stop word \\nfunc)",
    "Go/90": "`map[int]struct{}` is cut at the stop word `struct`",
    "Go/158": "`map[rune]struct{}` is cut at the stop word `struct`",
    "Rust/137": "enum RtnType and helpers after the function are cut (first closing brace)",
    "Rust/145": "helper sum_of_digits after the function is cut (first closing brace)",
    # the dataset's declaration already holds the first lines of decode_cyclic's body, so
    # declaration + canonical solution does not compile
    "CPP/38": "declaration repeats the start of the body",
}

# Buggy solutions that pass their tests, under the metric too.
BUGGY_PASSES = {
    # the tests call strlen("...") with a const char*: C's ::strlen is the better overload, so
    # the candidate's strlen(string) is never called
    "CPP/23",
}

# A few problems per language for the fast tests: the first, and those that need something
# provisioned (js-md5, boost::any, openssl, rand's 0.4 API, regex, md5) or random inputs.
FAST = {
    "python": (0, 162),
    "js": (0, 162),
    "java": (0, 162),
    "go": (0, 53, 162),
    "cpp": (0, 137, 162),
    "rust": (0, 50, 91, 162),
}


def docs(language: str) -> list[dict[str, Any]]:
    path = shared_file("humanevalpack", f"humanevalpack_{language}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fix_candidate(language: str, doc: Mapping[str, Any], field: str = "canonical_solution") -> str:
    """The candidate the harness builds for a Fix generation that continues the prompt with
    `doc[field]` (the fixtures' `canonical` case when field is the canonical solution)."""
    base = ref.prompt_base(doc, language, False)
    body = base[len(base.rstrip()) :] + doc[field]
    postprocessed = ref.postprocess_code("fix", language, doc, body, "")
    return ref.candidates(language, doc, [postprocessed])[0]


def whole_candidate(
    language: str, doc: Mapping[str, Any], field: str = "canonical_solution"
) -> str:
    """The harness's language fix-ups on the whole solution, `doc["prompt"] + doc[field]`
    (`get_reference(doc, get_solution=True)`): helpers included, nothing cut."""
    return ref.candidates(language, doc, [doc["prompt"] + doc[field]])[0]


def plan_for(language: str, doc: Mapping[str, Any], candidate: str, prelude: str = "") -> sb.Plan:
    """The plan that runs the reference program of `candidate`. Python: our trusted harness
    runs the candidate, then the test's check() with the `prelude`'s helpers (the reference
    runs both in one namespace, so the tests see helpers such as encode_cyclic)."""
    if language == "python":
        test = "\n".join(line for line in doc["test"].split("\n") if not line.startswith("check("))
        return sb.python_plan(
            candidate, [test], mode="function", entry_point=doc["entry_point"], prelude=prelude
        )
    builder = {
        "js": sb.js_plan,
        "java": sb.java_plan,
        "go": sb.go_plan,
        "cpp": sb.cpp_plan,
        "rust": sb.rust_plan,
    }[language]
    return builder(ref.program(candidate, doc))


@pytest.fixture(scope="module")
def box():
    with sb.Sandbox(workers=2) as sandbox:
        yield sandbox


def _require(box: sb.Sandbox, language: str) -> None:
    ok, reason = box.language_status(language)
    if not ok:
        pytest.skip(f"{language}: {reason}")
    for need, owner in sb.EXTRAS.items():
        if owner == language and need in box.toolchains[language].missing:
            pytest.skip(f"{language}: {box.toolchains[language].missing[need]}")


def run_pack(
    box: sb.Sandbox,
    language: str,
    numbers: tuple[int, ...] | None = None,
    build: Any = fix_candidate,
) -> dict[str, Any]:
    """Canonical and buggy programs of the given problems (all when None) through the box;
    `build(language, doc, field)` makes the candidate."""
    rows = docs(language)
    picked = [d for i, d in enumerate(rows) if numbers is None or i in numbers]
    picked = [d for d in picked if d["task_id"] not in RANDOM]
    plans = [
        plan_for(
            language,
            d,
            build(language, d, field),
            d["prompt"],  # helpers the tests call, defined by the trusted harness (as stage 04)
        )
        for field in ("canonical_solution", "buggy_solution")
        for d in picked
    ]
    start = time.monotonic()
    outcomes = box.run_many(plans, progress=False)
    seconds = time.monotonic() - start
    good, bad = outcomes[: len(picked)], outcomes[len(picked) :]
    return {
        "problems": len(picked),
        "canonical_failed": {d["task_id"]: o for d, o in zip(picked, good) if not o.passed},
        "buggy_passed": [d["task_id"] for d, o in zip(picked, bad) if o.passed],
        "buggy_verdicts": sorted({o.verdict for o in bad}),
        "seconds": round(seconds, 1),
    }


def _numbers(language: str, task_ids: Any) -> tuple[int, ...]:
    prefix = _PREFIX[language]
    return tuple(sorted(int(t[len(prefix) :]) for t in task_ids if t.startswith(prefix)))


def _describe(outcomes: Mapping[str, sb.Outcome]) -> dict[str, str]:
    return {k: f"{o.verdict}: {o.detail} {o.output[-600:]}" for k, o in outcomes.items()}


# ---------------------------------------------------------------- the candidates


def test_fix_candidates_match_the_fixtures():
    """Our construction of the canonical Fix candidate is the harness's (fixture rows)."""
    path = SHARED / "conformance" / "humanevalpack_postprocess.jsonl"
    if not path.exists():
        pytest.skip(f"fixtures not found: {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [
        r
        for r in rows
        if r["task"] == "humanevalfixtests"
        and r["case"] == "canonical"
        and r["prompt_style"] == "wizardcoder"
    ]
    assert {r["language"] for r in rows} == set(LANGUAGES)
    by_lang = {lang: docs(lang) for lang in LANGUAGES}
    for r in rows:
        doc = by_lang[r["language"]][int(r["task_id"].split("/")[1])]
        ours = fix_candidate(r["language"], doc)
        if r["language"] == "go":  # the added import block's order is hash-seed dependent
            ours, theirs = sorted(ours.split("\n")), sorted(r["expected_prediction"].split("\n"))
            assert ours == theirs, r["task_id"]
        else:
            assert ours == r["expected_prediction"], r["task_id"]


# ---------------------------------------------------------------- a few problems per language


@pytest.mark.parametrize("language", LANGUAGES)
def test_canonical_pass_buggy_fail_few(box, language):
    _require(box, language)
    result = run_pack(box, language, FAST[language])
    assert not result["canonical_failed"], _describe(result["canonical_failed"])
    assert not result["buggy_passed"], result


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if _numbers(lang, HARNESS_BROKEN)])
def test_whole_solutions_pass_where_the_harness_breaks_the_fix_program(box, language):
    """The programs the harness breaks are broken by its post-processing, not by how they run:
    the whole reference solution of the same problems passes (and its buggy twin fails)."""
    _require(box, language)
    numbers = _numbers(language, HARNESS_BROKEN)
    fix = run_pack(box, language, numbers)
    assert set(fix["canonical_failed"]) == {_PREFIX[language] + str(n) for n in numbers}
    whole = run_pack(box, language, numbers, whole_candidate)
    assert not whole["canonical_failed"], _describe(whole["canonical_failed"])
    assert not whole["buggy_passed"], whole


# ---------------------------------------------------------------- how each language is judged


def test_js_any_output_fails(box):
    """code_eval_octopack fails a JS program that prints anything (stdout or stderr)."""
    _require(box, "js")
    ok = "function f(){ return 1 }\nconsole.assert(f() === 1)\n"
    assert box.run(sb.js_plan(ok)).passed
    printed = box.run(sb.js_plan("console.log('debug')\n" + ok))
    assert printed.verdict == "failed" and "output" in printed.detail
    assert box.run(sb.js_plan(ok + "console.assert(f() === 2)\n")).verdict == "failed"
    assert box.run(sb.js_plan("process.exit(0)\n" + ok)).verdict == "failed"


def test_js_md5_is_found(box):
    _require(box, "js")
    program = (
        "const md5 = require('js-md5')\n"
        "console.assert(md5('Hello world') === '3e25960a79dbc69b674cd4ec67a72c62')\n"
    )
    plan = sb.js_plan(program)
    assert plan.needs == ("npm:js-md5",)
    outcome = box.run(plan)
    assert outcome.passed, outcome
    # a package nobody installs fails, as it does under the metric
    assert box.run(sb.js_plan("require('left-pad')\n")).verdict == "failed"


def test_missing_extra_is_a_sandbox_error(box, monkeypatch):
    _require(box, "js")
    monkeypatch.setitem(box.toolchains["js"].missing, "npm:js-md5", "not installed here")
    outcome = box.run(sb.js_plan("require('js-md5')\n"))
    assert outcome.verdict == "sandbox_error" and "not installed here" in outcome.detail


def test_cpp_runs_its_own_main_and_exit_status_counts(box):
    _require(box, "cpp")
    head = "#include <assert.h>\n#include <stdlib.h>\n"
    assert box.run(sb.cpp_plan(head + "int main(){ assert(1 == 1); }\n")).passed
    assert box.run(sb.cpp_plan(head + "int main(){ return 3; }\n")).verdict == "failed"
    assert box.run(sb.cpp_plan(head + "int main(){ assert(1 == 2); }\n")).verdict == "failed"
    early = head + "static int e = (exit(0), 0);\nint main(){ assert(1 == 2); }\n"
    assert box.run(sb.cpp_plan(early)).verdict == "failed"
    # a name `main` elsewhere is left alone (no macro renaming)
    member = head + "struct S { int main; };\nint main(){ S s{1}; assert(s.main == 1); }\n"
    assert box.run(sb.cpp_plan(member)).passed
    # C++11, as the metric compiles: C++17's library does not build
    cxx17 = head + "#include <optional>\nint main(){ std::optional<int> a = 1; assert(*a); }\n"
    assert box.run(sb.cpp_plan(cxx17)).verdict == "compile_error"


GO_HEAD = 'package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n)\n'
GO_TEST = "func TestF(t *testing.T) {\n    assert := assert.New(t)\n    assert.Equal(2, F(1))\n}\n"


def test_go_runs_the_whole_file_like_go_test(box):
    _require(box, "go")
    plain = GO_HEAD + "\nfunc F(x int) int { return x + 1 }\n\n" + GO_TEST
    outcome = box.run(sb.go_plan(plain))
    assert outcome.passed, outcome
    # a `func main` in the file is fine for `go test`
    assert box.run(sb.go_plan(plain + "\nfunc main() { panic(1) }\n")).passed
    wrong = GO_HEAD + "\nfunc F(x int) int { return x }\n\n" + GO_TEST
    assert box.run(sb.go_plan(wrong)).verdict == "failed"
    # an import the file does not use, or one after a declaration, does not compile
    unused = plain.replace('"testing"', '"testing"\n    "strings"')
    assert box.run(sb.go_plan(unused)).verdict == "compile_error"
    late = plain + '\nimport "strings"\n'
    assert box.run(sb.go_plan(late)).verdict == "compile_error"
    # os.Exit(0) inside a test panics under `go test` (-test.paniconexit0)
    exits = plain.replace("return x + 1", "os.Exit(0); return x + 1").replace(
        '"testing"', '"testing"\n    "os"'
    )
    assert box.run(sb.go_plan(exits)).verdict == "failed"


def test_go_vet_findings_fail_as_under_go_test(box):
    _require(box, "go")
    body = '\nfunc F(x int) int { _ = fmt.Sprintf("%d", "x"); return x + 1 }\n\n'
    vetted = GO_HEAD.replace('"testing"', '"testing"\n    "fmt"') + body + GO_TEST
    outcome = box.run(sb.go_plan(vetted))
    assert outcome.verdict == "compile_error" and "Sprintf" in outcome.output, outcome


def test_go_program_without_tests_is_refused():
    plan = sb.go_plan("package main\n\nfunc F() {}\n")
    assert plan.unavailable and "Test" in plan.unavailable


RUST_HEAD = "fn main(){}\nuse rand::Rng;\nuse regex::Regex;\nuse md5;\n"
RUST_TEST = (
    "\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n"
    "    fn test_f() {\n        let mut rng = rand::thread_rng();\n"
    "        let x: i32 = rng.gen_range(0, 4);\n        assert!(f(x) > x);\n    }\n}\n"
)


def test_rust_crates_and_main(box):
    _require(box, "rust")
    program = RUST_HEAD + "fn f(x: i32) -> i32 { x + 1 }\n" + RUST_TEST
    outcome = box.run(sb.rust_plan(program))
    assert outcome.passed, outcome
    # rand 0.8's one-argument gen_range is not the metric's rand ("0.4")
    newer = program.replace("gen_range(0, 4)", "gen_range(0..4)")
    assert box.run(sb.rust_plan(newer)).verdict == "compile_error"
    # `cargo check --bin` needs a main function
    no_main = program.replace("fn main(){}\n", "")
    assert box.run(sb.rust_plan(no_main)).verdict == "compile_error"
    wrong = program.replace("x + 1", "x - 1")
    assert box.run(sb.rust_plan(wrong)).verdict == "failed"
    regex = RUST_HEAD + (
        'fn f(s: &str) -> usize { Regex::new(r"[.?!]\\s*").unwrap().split(s).count() }\n'
        "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n"
        '    fn t() { assert_eq!(f("a. b! c"), 3); '
        'assert_eq!(format!("{:x}", md5::compute(b"")), "d41d8cd98f00b204e9800998ecf8427e"); }\n}\n'
    )
    assert box.run(sb.rust_plan(regex)).passed


def test_java_exit_status_counts(box):
    _require(box, "java")
    ok = "public class Main {\n    public static void main(String[] args) {\n    }\n}\n"
    assert box.run(sb.java_plan(ok)).passed
    thrown = ok.replace("{\n    }", "{ throw new AssertionError(); }")
    assert box.run(sb.java_plan(thrown)).verdict == "failed"
    early = ok.replace("{\n    }", "{ System.exit(0); }")
    assert box.run(sb.java_plan(early)).verdict == "failed"


# ---------------------------------------------------------------- programs that fake a pass
# Most of these passed with the previous runners (run against HEAD's plans.py: JS var/let/
# class/global/define, C++ constructor/preinit/ifunc, Go import/linkname/flags, all four Rust
# ones and Java's); the others guard the new runners. None may pass now.

JS_TESTS = (
    "const testF = () => {\n  console.assert(f() === 1)\n"
    "  console.assert(JSON.stringify([f()]) === JSON.stringify([1]))\n}\ntestF()\n"
)
JS_HOSTILE = {
    "var": "var console = {assert(){}}\n",
    "let": "let console = {assert(){}}\n",
    "class": "class console { static assert() {} }\n",
    "global": "globalThis.console = {assert(){}}\n",
    "define": "Object.defineProperty(globalThis, 'console', {value: {assert(){}}})\n",
    "patch": "console.assert = () => {}\n",
    "prototype": "Object.getPrototypeOf(console).assert = () => {}\n",
}


def test_js_program_cannot_change_the_tests_console(box):
    """Whatever the program declares or patches, the tests' console.assert is the runner's."""
    _require(box, "js")
    honest = box.run(sb.js_plan("function f(){ return 1 }\n\n" + JS_TESTS))
    assert honest.passed, honest
    for name, hostile in JS_HOSTILE.items():
        outcome = box.run(sb.js_plan(hostile + "function f(){ return 2 }\n\n" + JS_TESTS))
        assert outcome.verdict == "failed", (name, outcome)


# raw system calls (x86_64): reads the token from fd 3, writes the pass line on fd 4, exit(0)
CPP_STEAL = r"""#include <assert.h>
static long wc_sc(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static void steal() {
    char b[300] = "PASS ";
    long n = wc_sc(0, 3, (long)(b + 5), 200);
    if (n > 0) {
        while (n > 0 && (b[4 + n] == '\n' || b[4 + n] == ' ')) n--;
        b[5 + n] = '\n';
        wc_sc(1, 4, (long)b, 6 + n);
        wc_sc(60, 0, 0, 0);
    }
}
"""
CPP_HOSTILE = {
    "constructor": "__attribute__((constructor(0))) static void early() { steal(); }\n",
    "static": "static int early = (steal(), 0);\n",
    "preinit": "static void early(int, char **, char **) { steal(); }\n"
    '__attribute__((used, section(".preinit_array")))\n'
    "static void (*const p)(int, char **, char **) = early;\n",
    "ifunc": 'extern "C" void wc_dummy() {}\n'
    'extern "C" void *wc_resolve() { steal(); return (void *)wc_dummy; }\n'
    'extern "C" void wc_fn() __attribute__((ifunc("wc_resolve")));\n'
    # its address in data: resolved while the loader relocates, not at the first call
    "__attribute__((used)) static void (*wc_ptr)() = wc_fn;\n",
}


def test_cpp_code_before_main_cannot_take_the_token(box):
    """Constructors, static initialisers, .preinit_array entries and ifunc resolvers of the
    program run after the runner took the token (or the program is refused)."""
    _require(box, "cpp")
    if platform.machine() != "x86_64":
        pytest.skip("the hostile programs use x86_64 system calls")
    honest = box.run(sb.cpp_plan(CPP_STEAL + "int main() { assert(1 == 1); }\n"))
    assert honest.passed, honest
    for name, hostile in CPP_HOSTILE.items():
        outcome = box.run(sb.cpp_plan(CPP_STEAL + hostile + "int main() { assert(1 == 2); }\n"))
        assert outcome.verdict in ("failed", "compile_error"), (name, outcome)
        if name in ("preinit", "ifunc"):
            assert outcome.verdict == "compile_error" and "refused" in outcome.output, outcome


GO_WRONG = "\nfunc F(x int) int { return x }\n\n" + GO_TEST
GO_HOSTILE = {
    # the token package's API, imported
    "import": GO_HEAD.replace('"testing"', '"testing"\n    "os"\n    "wavecoder/wctoken"')
    + "\nfunc init() { wctoken.Passed(); os.Exit(0) }\n",
    # its variable, by linkname
    "linkname": GO_HEAD.replace('"testing"', '"testing"\n    "os"\n    _ "unsafe"')
    + "\n//go:linkname stolen wavecoder/wctoken.token\nvar stolen string\n\n"
    'func init() {\n    if stolen != "" {\n'
    '        os.NewFile(4, "r").Write([]byte("PASS " + stolen + "\\n"))\n'
    "        os.Exit(0)\n    }\n}\n",
    # a package-level variable's initialiser that reads fd 3 itself
    "initialiser": GO_HEAD.replace('"testing"', '"testing"\n    "os"')
    + "\nvar stolen = func() int {\n    buf := make([]byte, 256)\n"
    '    n, _ := os.NewFile(3, "t").Read(buf)\n    if n > 0 {\n'
    '        os.NewFile(4, "r").Write(append([]byte("PASS "), buf[:n]...))\n'
    "        os.Exit(0)\n    }\n    return n\n}()\n",
    # the flags `testing` reads, set before the runner's main: no test runs
    "flags": GO_HEAD.replace('"testing"', '"testing"\n    "flag"')
    + '\nfunc init() {\n    testing.Init()\n    flag.Set("test.run", "^$")\n}\n',
}


def test_go_init_code_cannot_take_the_token(box):
    """The program's var initialisers and init functions run after the token package took the
    token; it cannot name the token (import, linkname) nor change which tests run."""
    _require(box, "go")
    for name, hostile in GO_HOSTILE.items():
        outcome = box.run(sb.go_plan(hostile + GO_WRONG))
        assert outcome.verdict in ("failed", "compile_error"), (name, outcome)


RUST_STEAL = """
fn steal() {
    use std::io::{Read, Write};
    use std::os::unix::io::FromRawFd;
    let mut token = String::new();
    let mut input = unsafe { std::fs::File::from_raw_fd(3) };
    if input.read_to_string(&mut token).is_ok() && !token.trim().is_empty() {
        let mut out = unsafe { std::fs::File::from_raw_fd(4) };
        out.write_all(format!("PASS {}\\n", token.trim()).as_bytes()).ok();
        std::process::exit(0);
    }
    std::mem::forget(input);
}
"""
RUST_HOSTILE = {
    # the function the tests call reads the token
    "candidate": RUST_HEAD + RUST_STEAL + "fn f(x: i32) -> i32 { steal(); x - 1 }\n",
    # a static in .init_array
    "init_array": RUST_HEAD
    + RUST_STEAL
    + 'extern "C" fn early() { steal() }\n#[used]\n#[link_section = ".init_array"]\n'
    'static EARLY: extern "C" fn() = early;\nfn f(x: i32) -> i32 { x - 1 }\n',
    # a .preinit_array entry
    "preinit_array": RUST_HEAD
    + RUST_STEAL
    + 'extern "C" fn early() { steal() }\n#[used]\n#[link_section = ".preinit_array"]\n'
    'static EARLY: extern "C" fn() = early;\nfn f(x: i32) -> i32 { x - 1 }\n',
    # the arguments, changed before main into a filter that leaves the tests out
    "arguments": RUST_HEAD
    + 'extern "C" fn early(argc: i32, argv: *mut *const u8, _env: *const *const u8) {\n'
    '    if argc >= 3 { unsafe { *argv.add(2) = b"zzzz_wc\\0".as_ptr(); } }\n}\n'
    '#[used]\n#[link_section = ".init_array"]\n'
    'static EARLY: extern "C" fn(i32, *mut *const u8, *const *const u8) = early;\n'
    "fn f(x: i32) -> i32 { x - 1 }\n",
    # no test harness: the program's own C main returns 0
    "no_main": "#![no_main]\n"
    + RUST_HEAD
    + '#[export_name = "main"]\n'
    + 'pub extern "C" fn entry(_argc: i32, _argv: *const *const u8) -> i32 { 0 }\n'
    + "fn f(x: i32) -> i32 { x - 1 }\n",
}


def test_rust_code_cannot_take_the_token(box):
    """The token is read before any of the program's code (even in .init_array) runs; the
    program's own .preinit_array entries and `no_main` are refused; its argument changes are
    undone before the test harness reads them."""
    _require(box, "rust")
    for name, hostile in RUST_HOSTILE.items():
        outcome = box.run(sb.rust_plan(hostile + RUST_TEST))
        assert outcome.verdict in ("failed", "compile_error"), (name, outcome)
        if name in ("preinit_array", "no_main"):
            assert outcome.verdict == "compile_error" and "refused" in outcome.output, outcome


JAVA_HIJACK = """import java.nio.file.Files;
import java.nio.file.Paths;

class java {
    static class io {
        static class FileInputStream implements AutoCloseable {
            byte[] data;
            boolean done;
            FileInputStream(String path) throws Exception {
                data = Files.readAllBytes(Paths.get(path));
            }
            int read(byte[] b, int off, int len) {
                if (done) return -1;
                done = true;
                System.arraycopy(data, 0, b, off, data.length);
                return data.length;
            }
            public void close() throws Exception {
                byte[] line = ("PASS " + new String(data).trim() + "\\n").getBytes();
                Files.write(Paths.get("/dev/fd/4"), line);
                Runtime.getRuntime().halt(0);
            }
        }
        static class FileOutputStream implements AutoCloseable {
            FileOutputStream(String path) {}
            void write(byte[] b) {}
            public void close() {}
        }
    }
    static class util {
        static class Arrays {
            static byte[] copyOf(byte[] b, int n) { return b; }
        }
    }
}

public class Main {
    public static void main(String[] args) { throw new AssertionError(); }
}
"""


def test_java_program_classes_cannot_change_the_runner(box):
    """A class `java` (or `System`, `String`...) of the program is not in the runner's scope."""
    _require(box, "java")
    outcome = box.run(sb.java_plan(JAVA_HIJACK))
    assert outcome.verdict == "failed", outcome
    # `class Main` need not be public, as under `java Main`
    quiet = "class Main {\n    public static void main(String[] args) {}\n}\n"
    assert box.run(sb.java_plan(quiet)).passed
