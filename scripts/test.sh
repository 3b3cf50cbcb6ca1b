#!/usr/bin/env bash
# Set up and run the whole test suite (slow tests included), offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# The browser tests drive Debian's chromium and the annotation tests run Debian's redis-server beside a local
# argilla-server; install them where missing (needs root, as on CI machines).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "note: could not install ${missing[*]}; the tests that need them will be skipped (on CI: fail)" >&2
fi
# axe-core (the accessibility checker the browser tests load into the page) from npm, never a CDN; kept in .cache.
if [ ! -f .cache/axe-core/axe.min.js ] && command -v npm >/dev/null 2>&1; then
  (mkdir -p .cache/axe-core && cd .cache/axe-core && npm pack --silent axe-core@4.14.1 >/dev/null \
    && tar -xzf axe-core-4.14.1.tgz package/axe.min.js --strip-components=1 && rm axe-core-4.14.1.tgz) \
    || echo "note: could not fetch axe-core from npm; the accessibility tests will be skipped (on CI: fail)" >&2
fi
# argilla-server's own virtualenv (its pins clash with gradio's), built once and kept in .argilla-venv.
.venv/bin/python -c "from annotate.server.manage import ServerConfig, ensure_venv; ensure_venv(ServerConfig())"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
# Training tests allocate and free logit tensors of hundreds of MB every step; by default glibc maps and unmaps
# them each time, and page faults dominate (measured: 6.2 s/step, two thirds system time). Keeping them in the
# heap makes the same step 2.6 s.
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=536870912
# Lint first, with the project's own configuration (pyproject.toml): a finding fails the run.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
