#!/usr/bin/env bash
# Toolchains and libraries for executing HumanEvalPack programs (stage 04) as the reference
# harness does (bigcode-evaluation-harness + its code_eval_octopack metric). What comes from where:
#
#   Debian's packages (apt-get, root only):
#     bubblewrap       the sandbox every program runs in (fresh root, namespaces, no privileges)
#     golang-go        Go 1.19: ships a precompiled standard library, which the offline sandbox
#                      links against (testify's `assert` is shimmed by the sandbox itself)
#     libboost-dev     boost/any.hpp, which the C++ fix-ups #include in every program
#     libssl-dev       openssl/md5.h + -lcrypto -lssl (CPP/162; the metric always links both)
#     nodejs, g++, default-jdk-headless   when missing
#     chromium         headless browser for tests/test_lab.py (`make lab` opens a notebook in it)
#     librust-rand-dev librust-regex-dev librust-md5-dev
#                      crate sources under /usr/share/cargo/registry (rand 0.8.5, regex 1.7.1,
#                      md5 0.7.0): every Rust declaration has `use rand::Rng; use regex::Regex;
#                      use md5;`
#   the npm registry:
#     js-md5@0.7.3     JavaScript/162 `require('js-md5')`; into $VENV/share/wavecoder/node/node_modules
#                      (the sandbox sets NODE_PATH to it)
#   built here, once, offline (cargo with Debian's folder as the crates.io source):
#     $VENV/share/wavecoder/rust/   rlibs of regex, md5 and `rand`, and crates.json naming them; the
#                      sandbox compiles each program with `rustc --extern NAME=RLIB -L dependency=...`.
#                      The metric's Cargo.toml asks for rand "0.4" (HumanEvalPack's Rust tests call
#                      the two-argument `gen_range(low, high)` of rand <= 0.7); Debian has only 0.8,
#                      so `rand` here is a small crate giving rand 0.4's `Rng` API over rand 0.8.
#
# A language whose toolchain is missing is skipped by the evaluation with the reason, so a failure
# here is reported, never fatal. Needs cargo/rustc on PATH (or in ~/.cargo/bin) for the Rust crates.
set -u
VENV=${VENV:-.venv}
SHARE="$VENV/share/wavecoder"
JS_MD5_VERSION=0.7.3

want=()
command -v bwrap >/dev/null 2>&1 || want+=(bubblewrap)
command -v go >/dev/null 2>&1 || want+=(golang-go)
[ -e /usr/include/boost/any.hpp ] || want+=(libboost-dev)
[ -e /usr/include/openssl/md5.h ] || want+=(libssl-dev)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)
command -v g++ >/dev/null 2>&1 || want+=(g++)
command -v javac >/dev/null 2>&1 || want+=(default-jdk-headless)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
for crate in rand-0.8 regex-1 md5-0.7; do
  ls -d /usr/share/cargo/registry/"$crate".* >/dev/null 2>&1 || want+=("librust-${crate%-*}-dev")
done
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "toolchains: missing Debian packages ${want[*]} (install them as root to evaluate those languages)"
  else
    echo "toolchains: installing ${want[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } \
      >/tmp/wavecoder-apt.log 2>&1 \
      || echo "toolchains: apt-get failed (see /tmp/wavecoder-apt.log); those languages will be skipped"
  fi
fi

# ---- JavaScript: npm packages the references require
node_dir="$SHARE/node"
if ! grep -qs "\"version\": *\"$JS_MD5_VERSION\"" "$node_dir/node_modules/js-md5/package.json" \
    && command -v npm >/dev/null 2>&1; then
  mkdir -p "$node_dir"
  if npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error \
      "js-md5@$JS_MD5_VERSION" >/tmp/wavecoder-npm.log 2>&1; then
    echo "toolchains: js-md5@$JS_MD5_VERSION installed under $node_dir"
  else
    echo "toolchains: npm install js-md5 failed (see /tmp/wavecoder-npm.log); JavaScript/162 will be skipped"
  fi
fi

# ---- Rust: rand (rand 0.4 API), regex, md5, built once
# the rustc the sandbox will use (it looks in /usr/local/bin, /usr/bin, /bin, PATH, ~/.cargo/bin)
rustc_bin=$(PATH="/usr/local/bin:/usr/bin:/bin:$PATH:$HOME/.cargo/bin" command -v rustc)
cargo_bin=$(PATH="/usr/local/bin:/usr/bin:/bin:$PATH:$HOME/.cargo/bin" command -v cargo)
rust_dir="$SHARE/rust"
rustc_id=$([ -n "$rustc_bin" ] && "$rustc_bin" -vV 2>/dev/null)
if [ -n "$rustc_id" ] && [ -n "$cargo_bin" ] && [ -d /usr/share/cargo/registry ] \
    && ! { [ -f "$rust_dir/crates.json" ] && [ -f "$rust_dir/rustc.txt" ] \
           && [ "$(cat "$rust_dir/rustc.txt")" = "$rustc_id" ]; }; then
  rm -rf "$rust_dir"
  mkdir -p "$rust_dir/.cargo" "$rust_dir/src" "$rust_dir/rand-compat/src"
  cat >"$rust_dir/.cargo/config.toml" <<'EOF'
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "/usr/share/cargo/registry"

[net]
offline = true
EOF
  cat >"$rust_dir/Cargo.toml" <<'EOF'
[package]
name = "wavecoder-humanevalpack-crates"
version = "0.1.0"
edition = "2021"

[dependencies]
rand = { path = "rand-compat" }
# default-features off: the "perf" feature needs aho-corasick and memchr (not packaged as
# dependencies here); it only speeds matching up, results are the same
regex = { version = "1", default-features = false, features = ["std", "unicode"] }
md5 = "0.7"

[profile.release]
debug = false
EOF
  echo "" >"$rust_dir/src/lib.rs"
  cat >"$rust_dir/rand-compat/Cargo.toml" <<'EOF'
[package]
name = "rand"
version = "0.4.6"
edition = "2021"
description = "rand 0.4's API over Debian's rand 0.8 (for HumanEvalPack's Rust tests)"

[dependencies]
rand08 = { package = "rand", version = "0.8" }
EOF
  cat >"$rust_dir/rand-compat/src/lib.rs" <<'EOF'
//! The part of rand 0.4's API that HumanEvalPack's Rust programs use (`Rng::gen`,
//! the two-argument `Rng::gen_range(low, high)`, `thread_rng`, `random`, ...), implemented over
//! rand 0.8, the only version Debian packages. The reference metric builds with `rand = "0.4"`.
use rand08::distributions::uniform::SampleUniform;
use rand08::distributions::{Distribution, Standard};

pub use rand08::{random, thread_rng, CryptoRng, Error, RngCore, SeedableRng};
pub use rand08::rngs::{OsRng, StdRng, ThreadRng};

pub mod rngs {
    pub use rand08::rngs::*;
}
pub mod distributions {
    pub use rand08::distributions::*;
}

/// rand 0.4's `Rng`: implemented for every generator.
pub trait Rng: RngCore {
    fn gen<T>(&mut self) -> T
    where
        Standard: Distribution<T>,
    {
        rand08::Rng::gen(self)
    }

    /// A value in `[low, high)`; panics when `low >= high` (as rand 0.4 does).
    fn gen_range<T: PartialOrd + SampleUniform>(&mut self, low: T, high: T) -> T {
        assert!(low < high, "Rng.gen_range called with low >= high");
        rand08::Rng::gen_range(self, low..high)
    }

    fn gen_weighted_bool(&mut self, n: u32) -> bool {
        n <= 1 || self.gen_range(0, n) == 0
    }

    fn gen_iter<T>(&mut self) -> Generator<'_, T, Self>
    where
        Standard: Distribution<T>,
        Self: Sized,
    {
        Generator { rng: self, _marker: std::marker::PhantomData }
    }

    fn gen_ascii_chars(&mut self) -> AsciiGenerator<'_, Self>
    where
        Self: Sized,
    {
        AsciiGenerator { rng: self }
    }

    fn choose<'a, T>(&mut self, values: &'a [T]) -> Option<&'a T> {
        if values.is_empty() {
            None
        } else {
            Some(&values[self.gen_range(0, values.len())])
        }
    }

    fn choose_mut<'a, T>(&mut self, values: &'a mut [T]) -> Option<&'a mut T> {
        if values.is_empty() {
            None
        } else {
            let i = self.gen_range(0, values.len());
            Some(&mut values[i])
        }
    }

    fn shuffle<T>(&mut self, values: &mut [T]) {
        let mut i = values.len();
        while i >= 2 {
            i -= 1;
            values.swap(i, self.gen_range(0, i + 1));
        }
    }
}

impl<R: RngCore + ?Sized> Rng for R {}

pub struct Generator<'a, T, R: 'a> {
    rng: &'a mut R,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T, R: Rng> Iterator for Generator<'a, T, R>
where
    Standard: Distribution<T>,
{
    type Item = T;
    fn next(&mut self) -> Option<T> {
        Some(self.rng.gen())
    }
}

pub struct AsciiGenerator<'a, R: 'a> {
    rng: &'a mut R,
}

impl<'a, R: Rng> Iterator for AsciiGenerator<'a, R> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        Some(*self.rng.choose(CHARSET).unwrap() as char)
    }
}

/// rand 0.4's `weak_rng()`: a fast generator seeded from the thread's.
pub fn weak_rng() -> StdRng {
    StdRng::from_rng(thread_rng()).expect("seeding from thread_rng")
}

/// rand 0.4's `sample`: `amount` elements of `iterable`, in random order.
pub fn sample<T, I, R>(rng: &mut R, iterable: I, amount: usize) -> Vec<T>
where
    I: IntoIterator<Item = T>,
    R: Rng,
{
    let mut reservoir: Vec<T> = Vec::with_capacity(amount);
    for (i, elem) in iterable.into_iter().enumerate() {
        if i < amount {
            reservoir.push(elem);
        } else {
            let k = rng.gen_range(0, i + 1);
            if let Some(spot) = reservoir.get_mut(k) {
                *spot = elem;
            }
        }
    }
    reservoir
}
EOF
  if (cd "$rust_dir" && CARGO_HOME="$PWD/cargo-home" RUSTC="$rustc_bin" "$cargo_bin" build \
        --offline --release --message-format=json >build.json 2>build.log); then
    py=$(command -v "$VENV/bin/python" || command -v python3)
    "$py" - "$rust_dir" <<'EOF' && printf '%s' "$rustc_id" >"$rust_dir/rustc.txt"
import json, os, sys
root = os.path.abspath(sys.argv[1])
externs = {}
for line in open(os.path.join(root, "build.json")):
    msg = json.loads(line) if line.startswith("{") else {}
    if msg.get("reason") != "compiler-artifact":
        continue
    name, pid = msg["target"]["name"], msg["package_id"]
    ours = "rand-compat" in pid or (name in ("regex", "md5"))
    rlibs = [f for f in msg["filenames"] if f.endswith(".rlib")]
    if ours and rlibs and name in ("rand", "regex", "md5"):
        externs[name] = os.path.abspath(rlibs[0])
if set(externs) != {"rand", "regex", "md5"}:
    sys.exit(f"toolchains: crates missing from the build: {sorted(externs)}")
deps = os.path.join(root, "target", "release", "deps")
json.dump({"externs": externs, "deps": deps}, open(os.path.join(root, "crates.json"), "w"), indent=1)
EOF
    if [ -f "$rust_dir/rustc.txt" ]; then
      # keep the rlibs; drop build scripts' output, fingerprints and the like
      rm -rf "$rust_dir/target/release/build" "$rust_dir/target/release/.fingerprint" \
        "$rust_dir/target/release/incremental"
      echo "toolchains: Rust crates rand (0.4 API), regex, md5 built under $rust_dir"
    fi
  else
    echo "toolchains: building the Rust crates failed (see $rust_dir/build.log); Rust will be skipped"
  fi
  rm -rf "$rust_dir/cargo-home"
fi
exit 0
