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
    step examples "{{just_executable()}}" --justfile "{{justfile()}}" examples
    step example-shared-lock cargo run --quiet --example shared_lock
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

# Run the client examples (shared_counter, watch --demo, memoize_with) against a fresh hub on 127.0.0.1:18871
examples:
    #!/usr/bin/env bash
    set -euo pipefail
    port=18871
    cargo build --quiet --bin memhub --examples
    # Ready when GET /healthz answers 200 (curl if present, else bash's /dev/tcp).
    healthy() {
        if command -v curl >/dev/null; then
            curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
                printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
                timeout 1 head -n1 <&3 | grep -q ' 200 ') 2>/dev/null
        fi
    }
    # A hub already answering there would be tested instead of ours.
    if healthy; then echo "!! just examples: port $port is busy; stop what listens there"; exit 1; fi
    log=$(mktemp)
    "${CARGO_TARGET_DIR:-target}/debug/memhub" serve --host 127.0.0.1 --port "$port" 2>"$log" &
    hub=$!
    stop_hub() {
        local rc=$?
        kill "$hub" 2>/dev/null || true
        wait "$hub" 2>/dev/null || true
        if [ "$rc" -ne 0 ]; then echo "!! just examples: failed; the hub's log:"; cat "$log"; fi
        rm -f "$log"
        exit "$rc"
    }
    trap stop_hub EXIT
    for _ in $(seq 100); do
        kill -0 "$hub" 2>/dev/null || { echo "!! just examples: the hub exited (is port $port busy?)"; exit 1; }
        if healthy; then break; fi
        sleep 0.1
    done
    healthy || { echo "!! just examples: the hub on port $port did not become ready"; exit 1; }
    export MEMHUB_URL="ws://127.0.0.1:$port/ws"
    run() {
        local name="$1" t0=$SECONDS; shift
        echo "==> just examples: cargo run --example $name${*:+ -- $*}"
        cargo run --quiet --example "$name" -- "$@"
        echo "<== just examples: $name ok ($((SECONDS - t0))s)"
    }
    run shared_counter
    run watch --demo
    run memoize_with
    # shared_lock starts its own hub; `just test` runs it as a step of its own.

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
