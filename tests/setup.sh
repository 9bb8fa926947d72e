#!/usr/bin/env bash
# Test prerequisites that pip cannot install: headless Chromium for the HTML report test.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "tests/setup.sh: installing Debian's chromium for the report rendering test" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "tests/setup.sh: could not install chromium; the HTML rendering test will be skipped" >&2
    fi
fi
