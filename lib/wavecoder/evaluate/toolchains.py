"""Which language toolchains (and provisioned extras: npm packages, crates) this machine has."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:" + os.environ.get("PATH", ""))


@dataclass
class Toolchain:
    language: str
    available: bool
    reason: str = ""
    paths: dict[str, str] = field(default_factory=dict)
    # provisioned extras (see `EXTRAS`) this toolchain lacks, with the reason
    missing: dict[str, str] = field(default_factory=dict)


# Extras that some reference programs need, provisioned by scripts/toolchains.sh under
# `toolchain_dir()`: npm's js-md5 (JavaScript/162) and the crates every Rust declaration uses.
EXTRAS = {
    "npm:js-md5": "js",
    "rust-crates": "rust",
}
_SETUP_HINT = "run scripts/toolchains.sh (make setup)"


def toolchain_dir() -> Path:
    """Where scripts/toolchains.sh puts npm packages and built crates: `$VENV/share/wavecoder`
    (`WAVECODER_TOOLCHAIN_DIR` overrides)."""
    override = os.environ.get("WAVECODER_TOOLCHAIN_DIR")
    return Path(override) if override else Path(sys.prefix) / "share" / "wavecoder"


def _version_ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def detect_toolchains(python: str | None = None) -> dict[str, Toolchain]:
    """Which languages can run here; a missing one carries the reason (and the Debian package)."""
    found: dict[str, Toolchain] = {}
    py = python or _reachable_python()
    found["python"] = Toolchain(
        "python", bool(py) and _version_ok([py, "-c", "pass"]), "", {"python": py}
    )
    node = _which("node")
    found["js"] = (
        _detect_node_modules(Toolchain("js", True, paths={"node": node}))
        if node
        else Toolchain("js", False, "node not found (Debian: apt-get install nodejs)")
    )
    javac, java = _which("javac"), _which("java")
    found["java"] = (
        Toolchain("java", True, paths={"javac": javac, "java": java})
        if javac and java
        else Toolchain("java", False, "javac/java not found (Debian: apt-get install default-jdk)")
    )
    gpp = _which("g++")
    found["cpp"] = (
        Toolchain("cpp", True, paths={"g++": gpp})
        if gpp
        else Toolchain("cpp", False, "g++ not found (Debian: apt-get install g++)")
    )
    found["go"] = _detect_go()
    found["rust"] = _detect_rust()
    return found


def _detect_go() -> Toolchain:
    go = _which("go")
    if not go:
        return Toolchain("go", False, "go not found (Debian: apt-get install golang-go)")
    try:
        env = subprocess.run(
            [go, "env", "GOROOT", "GOHOSTOS", "GOHOSTARCH"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        goroot, goos, goarch = env
    except (OSError, subprocess.SubprocessError, ValueError):
        return Toolchain("go", False, "`go env` failed")
    tools = Path(goroot) / "pkg" / "tool" / f"{goos}_{goarch}"
    stdpkg = Path(goroot) / "pkg" / f"{goos}_{goarch}"
    if not (stdpkg / "testing.a").exists():
        # Go >= 1.20 ships no precompiled std; `go build` would need a shared build cache,
        # which one program could poison for the next.
        return Toolchain("go", False, f"no precompiled std library in {stdpkg} (needs Go <= 1.19)")
    paths = {
        "compile": str(tools / "compile"),
        "link": str(tools / "link"),
        "vet": str(tools / "vet"),
        "goroot": goroot,
        "gostd": str(stdpkg),
    }
    if not Path(paths["vet"]).exists():
        return Toolchain("go", False, f"no vet tool in {tools} (`go test` runs vet)")
    return Toolchain("go", True, paths=paths)


def _detect_node_modules(tc: Toolchain) -> Toolchain:
    """npm packages installed by scripts/toolchains.sh (found through NODE_PATH)."""
    modules = toolchain_dir() / "node" / "node_modules"
    if (modules / "js-md5" / "package.json").exists():
        tc.paths["node_path"] = str(modules)
    else:
        tc.missing["npm:js-md5"] = f"npm package js-md5 not installed in {modules} ({_SETUP_HINT})"
    return tc


def _detect_crates(tc: Toolchain) -> Toolchain:
    """The rlibs scripts/toolchains.sh built (rand with rand 0.4's API, regex, md5), usable only
    by the compiler that built them."""
    folder = toolchain_dir() / "rust"
    try:
        info = json.loads((folder / "crates.json").read_text())
        built_by = (folder / "rustc.txt").read_text().strip()
        externs = {name: info["externs"][name] for name in ("rand", "regex", "md5")}
        deps = info["deps"]
    except (OSError, ValueError, KeyError, TypeError):
        tc.missing["rust-crates"] = f"crates rand, regex, md5 not built in {folder} ({_SETUP_HINT})"
        return tc
    try:
        ours = subprocess.run(
            [tc.paths["rustc"], "-vV"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        ours = ""
    if ours != built_by:
        tc.missing["rust-crates"] = (
            f"crates in {folder} were built by another rustc ({built_by.splitlines()[:1]}); "
            + _SETUP_HINT
        )
    elif not all(Path(f).exists() for f in [*externs.values(), deps]):
        tc.missing["rust-crates"] = f"crates in {folder} are incomplete ({_SETUP_HINT})"
    else:
        tc.paths.update({f"extern_{name}": path for name, path in externs.items()})
        tc.paths["crate_deps"] = deps
    return tc


def _detect_rust() -> Toolchain:
    rustc = _which("rustc") or (str(Path.home() / ".cargo/bin/rustc"))
    if not rustc or not Path(rustc).exists():
        return Toolchain("rust", False, "rustc not found (Debian: apt-get install rustc)")
    try:  # the real compiler, not the rustup proxy (which needs $HOME/.rustup)
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sysroot = ""
    real = Path(sysroot) / "bin" / "rustc"
    path = str(real) if sysroot and real.exists() else rustc
    return _detect_crates(Toolchain("rust", True, paths={"rustc": path, "sysroot": sysroot}))


_TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _reachable_python() -> str:
    """This interpreter, as a path the sandbox can see: a virtualenv under /tmp (a checkout
    there) is hidden by the fresh tmpfs, so use the real interpreter it links to. Programs
    need the standard library only."""
    exe = sys.executable
    if any(_under(Path(exe).parent, d) for d in _TMPFS_DIRS):
        real = os.path.realpath(exe)
        if not any(_under(Path(real).parent, d) for d in _TMPFS_DIRS):
            return real
    return exe


def _under(path: Path, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder.rstrip("/") + "/")
