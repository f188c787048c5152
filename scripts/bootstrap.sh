#!/usr/bin/env bash
# Installs what the build needs on Debian/Ubuntu and says what it did.
# Idempotent: a second run installs nothing and says so.
#
#   LLVM 19 (llvm-19-dev, libpolly-19-dev, zlib1g-dev, libzstd-dev): the `jit` crate (inkwell).
#   build-essential, pkg-config: C code built by -sys crates (libsecp256k1, blst, c-kzg, zstd).
#   nodejs + npm: solc-js, used only by scripts/build-contracts.sh (not by the build or tests).
set -euo pipefail

APT_PACKAGES=(build-essential pkg-config llvm-19-dev libpolly-19-dev zlib1g-dev libzstd-dev)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: system packages present (${APT_PACKAGES[*]})"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "bootstrap: installed ${missing[*]}"
fi

if [ ! -x /usr/lib/llvm-19/bin/llvm-config ]; then
  echo "bootstrap: /usr/lib/llvm-19/bin/llvm-config not found after install" >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
echo "bootstrap: $(cargo --version), LLVM $(/usr/lib/llvm-19/bin/llvm-config --version)"
