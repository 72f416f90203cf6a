#!/usr/bin/env bash
# Installs everything tango-tracer needs to build, run and test, idempotently.
# Fast when everything is already there: each step checks before it installs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The pinned toolchain: from `cargo xtask`, else from the workspace's cargo configuration.
NIGHTLY="${TANGO_TRACER_TOOLCHAIN:-$(sed -n 's/^TANGO_TRACER_TOOLCHAIN *= *"\(.*\)"/\1/p' "$ROOT/.cargo/config.toml")}"
[[ -n "$NIGHTLY" ]] || { echo "[bootstrap] no pinned toolchain in .cargo/config.toml" >&2; exit 1; }
BPF_LINKER_VERSION=0.13.0
CARGO_DEB_VERSION=3.8.0
PYTANGO_VERSION=10.3.1
VENV="${TANGO_TRACER_VENV:-$ROOT/target/venv}"
# --test-stack: also what the tests need; --package: also what `cargo xtask package` needs.
WANT_TEST_STACK=""
WANT_PACKAGE=""
for arg in "$@"; do
    case "$arg" in
        --test-stack) WANT_TEST_STACK=--test-stack ;;
        --package) WANT_PACKAGE=--package ;;
        *) echo "[bootstrap] unknown option $arg" >&2; exit 1 ;;
    esac
done

log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_apt=()
want_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$1"); }

for p in llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev python3-venv pkg-config protobuf-compiler; do want_pkg "$p"; done
if [[ "$WANT_TEST_STACK" == "--test-stack" ]]; then
    for p in mariadb-server tango-db tango-test python3-tango tmux chromium; do want_pkg "$p"; done
fi
if ((${#need_apt[@]})); then
    log "apt: installing ${need_apt[*]}"
    echo "tango-db tango-db/dbconfig-install boolean false" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Installed explicitly: rustup does not always install a missing toolchain by itself
# (RUSTUP_AUTO_INSTALL=0 on managed hosts and CI).
components=(rust-src rustfmt clippy)
if ! rustup toolchain list | grep -q "^$NIGHTLY"; then
    log "rustup: installing $NIGHTLY"
    rustup toolchain install "$NIGHTLY" --profile minimal "${components[@]/#/--component=}"
else
    installed="$(rustup component list --installed --toolchain "$NIGHTLY" 2>/dev/null)"
    for c in "${components[@]}"; do
        grep -q "^$c" <<<"$installed" || rustup component add --toolchain "$NIGHTLY" "$c"
    done
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "cargo: installing bpf-linker $BPF_LINKER_VERSION (LLVM 22)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +"$NIGHTLY" install bpf-linker --version "$BPF_LINKER_VERSION" \
        --locked --no-default-features --features llvm-22
fi

if [[ "$WANT_PACKAGE" == "--package" ]] && ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    log "cargo: installing cargo-deb $CARGO_DEB_VERSION"
    cargo +"$NIGHTLY" install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

if [[ "$WANT_TEST_STACK" == "--test-stack" ]]; then
    if ! "$VENV/bin/python" -c "import tango, sys; sys.exit(tango.__version__ != '$PYTANGO_VERSION')" 2>/dev/null; then
        log "python: creating $VENV with pytango==$PYTANGO_VERSION"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q "pytango==$PYTANGO_VERSION" "opentelemetry-proto" "protobuf"
    fi
fi
log "ready"
