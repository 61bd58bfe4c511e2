#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
# This is the README's test command; .ci/run runs it unchanged.
#
# Debian packages: SIPp (sip-tester), dnsmasq, systemd-analyze (systemd), and the venv
# module when python3 lacks it (python3-venv).  Python packages go into .venv in the
# repository: Debian 12's python3 is "externally managed" (PEP 668), so pip may not
# install into it.
set -euo pipefail
cd "$(dirname "$0")/.."

has_venv() { python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq-base)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
[ -x .venv/bin/python ] || has_venv || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# Exit status 5 means pytest collected no tests: that must fail CI, and it does,
# because the script ends with pytest's own status.
.venv/bin/python -m pytest -q "$@"
