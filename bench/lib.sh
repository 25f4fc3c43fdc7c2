# Shared by the bench scripts (sourced, not run): logging, running PostgreSQL's tools as the
# postgres user, installing what is missing without starting it, building a release binary of
# ours, and saying how busy the machine is before a measurement.

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }

as_pg() { # PostgreSQL refuses to run as root: as root, run its tools as the postgres user
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

apt_install() { # packages...: installs them (as root) without starting any service they ship
    (($#)) || return 0
    [[ $EUID -eq 0 ]] || die "missing $*: run as root, or install them first"
    log "installing $*"
    # Debian's postinst scripts start what they install (nginx on :80, a 'main' PostgreSQL
    # cluster). A policy-rc.d that answers 101 forbids that, so the install leaves nothing running.
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
    ((created)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install $* failed ($rc)"
}

release_binary() { # package: builds it in release mode and prints the binary's path
    log "building $1 (cargo build --release -p $1)"
    (cd "$ROOT" && cargo build --release -q -p "$1") || die "cargo build failed"
    # cargo metadata honours CARGO_TARGET_DIR and .cargo/config; `target/` is the fallback.
    local target
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])') || target="$ROOT/target"
    [[ -x $target/release/$1 ]] || die "no $1 binary at $target/release/$1"
    echo "$target/release/$1"
}

cpu_busy() { # percent of both cores busy over one second, before we load them ourselves
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

quiet_check() { # phase: says how busy the machine is before a phase (our servers are idle then)
    local busy
    busy=$(cpu_busy)
    if ((busy > 10)); then
        echo "   WARNING: the machine was ${busy}% busy before the $1 with our servers idle:"
        echo "   something else is using the CPU (a build, tests); numbers below will be noisy."
    else
        echo "   machine ${busy}% busy before the $1 (our servers idle)"
    fi
}
