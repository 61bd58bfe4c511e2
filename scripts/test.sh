#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
# This is the README's test command; .ci/run runs it unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq-base)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# Exit status 5 means pytest collected no tests: that must fail CI, and it does,
# because every non-zero status propagates through `set -e`.
python3 -m pytest -q "$@"
