# memhub tasks. `just` lists them; `just test` is what CI runs (via .ci/run).

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# List the recipes
default:
    @just --list

# Run the hub in release mode; extra args go to `memhub serve` (e.g. `just run --port 18814`)
run *args:
    cargo run --release -- serve "$@"

# Runs every step even after one fails, then names the failed steps and exits non-zero.
# Everything CI checks: fmt, clippy, Rust tests (unit, integration, benches once), doctests, examples
test:
    #!/usr/bin/env bash
    set -uo pipefail
    started=$SECONDS
    failed=()
    step() {
        local name="$1"; shift
        echo
        echo "==> just test: [$name] $*"
        local t0=$SECONDS
        if "$@"; then
            echo "<== just test: [$name] ok ($((SECONDS - t0))s)"
        else
            echo "!! just test: [$name] FAILED ($((SECONDS - t0))s)"
            failed+=("$name")
        fi
    }
    step fmt cargo fmt --check
    step clippy cargo clippy --all-targets -- -D warnings
    step cargo-test cargo test --all-targets --no-fail-fast
    step doctests cargo test --doc
    step examples cargo run --quiet --example watch
    # Later: JS client tests (node:test + ws) and dashboard browser tests
    # (playwright-core + Debian's chromium) go here, e.g.
    #   step js npm --prefix tests/js test
    #   step browser npm --prefix tests/js run browser
    echo
    if [ ${#failed[@]} -gt 0 ]; then
        echo "!! just test: FAILED steps: ${failed[*]} ($((SECONDS - started))s)"
        exit 1
    fi
    echo "==> just test: all steps passed ($((SECONDS - started))s)"

# Criterion benches of the store and event encoding (extra args go to criterion, e.g. `just bench --quick`)
bench *args:
    cargo bench --bench store -- "$@"

# Format all code
fmt:
    cargo fmt

# Clippy on every target, warnings are errors
lint:
    cargo clippy --all-targets -- -D warnings

# Install what the tests need; safe to run again
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    echo "==> just setup: Rust toolchain"
    cargo --version
    rustc --version
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
    # Later issues add their installs here, each skipped when already present, e.g.
    #   npm: (cd tests/js && npm ci --no-audit --no-fund)
    #   chromium for browser tests:
    #     command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
    echo "==> just setup: done"
