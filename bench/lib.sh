# Shared by the benchmark scripts (sourced, not run).

# Sets BIN to $GITVISOR_BIN when given, else builds target/release/gitvisor (under
# CARGO_TARGET_DIR when set) and sets BIN to it; exits when there is no binary.
gitvisor_binary() {
    local root target
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [[ -n ${GITVISOR_BIN:-} ]]; then
        BIN=$GITVISOR_BIN
    else
        echo "building: cargo build --release -p gitvisor" >&2
        (cd "$root" && cargo build --release -q -p gitvisor >&2)
        target=${CARGO_TARGET_DIR:-$root/target}
        [[ $target = /* ]] || target=$root/$target
        BIN=$target/release/gitvisor
    fi
    [[ -x $BIN ]] || { echo "no gitvisor binary at $BIN" >&2; exit 1; }
}

# Deletes the network namespaces named in NAMESPACES, then waits until the kernel has
# really torn them down (namespace teardown runs after `ip netns del` returns and slows
# whatever runs next), so that cost stays with the benchmark. Settled once two probes in
# a row create a namespace quickly. $1: a name for the probe namespace.
settle_namespaces() {
    local probe=$1 ns t0 t1 start fast=0
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    (( ${#NAMESPACES[@]} )) || return 0
    echo "waiting for the kernel to tear down the benchmark's namespaces..." >&2
    start=$(date +%s%N)
    while (( fast < 2 )); do
        t0=$(date +%s%N)
        ip netns add "$probe" 2>/dev/null && ip netns del "$probe" 2>/dev/null
        t1=$(date +%s%N)
        if (( t1 - t0 < 100000000 )); then fast=$(( fast + 1 )); else fast=0; fi
        sleep 0.2
    done
    echo "teardown took $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
}
