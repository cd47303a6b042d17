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
# Everything CI checks: fmt, clippy, Rust tests (unit, integration, benches once), doctests, examples, soak, JS client and browser tests
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
    step soak-60s "{{just_executable()}}" --justfile "{{justfile()}}" soak-seconds 60
    step js-client env MEMHUB_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/memhub" npm --prefix tests/js test
    step browser env MEMHUB_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/memhub" npm --prefix tests/js run browser
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
    cargo build --quiet --bin memhub --examples
    scripts/with-hub.sh --bin "${CARGO_TARGET_DIR:-target}/debug/memhub" --port 18871 -- bash -c '
        set -euo pipefail
        for ex in "shared_counter" "watch -- --demo" "memoize_with"; do
            t0=$SECONDS
            echo "==> just examples: cargo run --example $ex"
            cargo run --quiet --example $ex
            echo "<== just examples: $ex ok ($((SECONDS - t0))s)"
        done'
    # shared_lock starts its own hub; `just test` runs it as a step of its own.

# Chaos soak (`memhub bench --mode chaos`) of a separate release hub for `minutes`, checking its RSS; PASS or FAIL
soak minutes="10":
    @just soak-seconds $(({{minutes}}*60))

# The soak for a number of seconds (`just test` runs 60)
soak-seconds seconds:
    cargo build --release --quiet --bin memhub
    scripts/with-hub.sh --port 18873 -- bash -c 'exec "$MEMHUB_BIN" bench --mode chaos --url "$MEMHUB_URL" --pid "$MEMHUB_PID" --seconds {{seconds}}'

# Fuzz frame parsing + dispatch with cargo-fuzz (libFuzzer) for `seconds`; installs cargo-fuzz if missing
fuzz seconds="60":
    cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets this stable toolchain accept them.
    RUSTC_BOOTSTRAP=1 cargo fuzz run frame -- -max_total_time={{seconds}}

# Criterion benches of the store and event encoding (extra args go to criterion, e.g. `just bench --quick`)
bench *args:
    cargo bench --bench store -- "$@"

# memhub vs Redis side by side (get/update, pipelining, fan-out, idle connections, keyspace RSS, keys); prints a table of ratios. Extra args go to scripts/compare.sh (e.g. `just compare --reps 5`)
compare *args:
    scripts/compare.sh "$@"

# Instructions per request, memhub vs Redis, under callgrind (load-independent; installs valgrind if missing)
instructions *args:
    scripts/instructions.sh "$@"

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
    # Root installs Debian packages directly; anyone else needs sudo.
    apt_install() {
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
    }
    echo "==> just setup: Node.js and npm (JS client and dashboard tests)"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
    node --version
    echo "==> just setup: npm packages in tests/js (ws, playwright-core)"
    npm --prefix tests/js ci --no-audit --no-fund --loglevel=error
    echo "==> just setup: Chromium for the dashboard tests (Debian's; Playwright's download does not work here)"
    if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
    /usr/bin/chromium --version
    echo "==> just setup: done"
