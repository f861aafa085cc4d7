#!/usr/bin/env bash
# Toolchains for executing HumanEvalPack programs (stage 04): python3 is always there; node,
# javac/java, g++ and rustc are used when present; Go comes from Debian's golang-go (1.19 ships
# a precompiled standard library, which the offline sandbox needs) and Boost's headers from
# libboost-dev. Only as root with apt-get; a language whose toolchain is missing is skipped by
# the evaluation with the reason, so a failure here is reported, never fatal.
set -u
want=()
command -v go >/dev/null 2>&1 || want+=(golang-go)
[ -e /usr/include/boost/any.hpp ] || want+=(libboost-dev)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v g++ >/dev/null 2>&1 || want+=(g++)
command -v javac >/dev/null 2>&1 || want+=(default-jdk-headless)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "toolchains: missing Debian packages ${want[*]} (install them as root to evaluate those languages)"
  exit 0
fi
echo "toolchains: installing ${want[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } >/tmp/wavecoder-apt.log 2>&1 \
  || echo "toolchains: apt-get failed (see /tmp/wavecoder-apt.log); those languages will be skipped"
exit 0
