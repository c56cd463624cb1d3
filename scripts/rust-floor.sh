# Sourced by the scripts that build gitvisor from source, from the repository root.
#
# rust_is_new_enough: succeeds when cargo is installed and rustc is at least Cargo.toml's
# rust-version (Debian 12's and 13's own rustc packages are older, so `apt-get install
# cargo` does not help). Sets $need (the floor) and $rustc_version (empty: no rustc) for
# the caller's message.
rust_is_new_enough() {
    need=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
    rustc_version=$(rustc --version 2>/dev/null | awk '{print $2}')
    command -v cargo >/dev/null && [ -n "$rustc_version" ] \
        && [ "$(printf '%s\n' "$need" "$rustc_version" | sort -V | head -1)" = "$need" ]
}
