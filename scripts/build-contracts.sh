#!/usr/bin/env bash
# Rebuilds contracts/out/ from contracts/src/ with solc-js (npm `solc`, pinned in
# contracts/package.json) for the Cancun EVM (see contracts/build.js). The outputs are
# committed, so neither the build nor the tests need npm; run this after changing a contract.
set -euo pipefail
cd "$(dirname "$0")/../contracts"
npm ci --no-audit --no-fund --silent
node build.js
