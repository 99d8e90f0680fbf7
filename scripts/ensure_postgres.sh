#!/usr/bin/env bash
# Install PostgreSQL's server from Debian's packages when this machine has none, so the tests
# marked `postgres` run (they start their own throwaway cluster on loopback). Never fails the
# build: without PostgreSQL those tests are skipped with the reason.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get: PostgreSQL not installed, tests marked postgres will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        postgresql >/dev/null
}
echo "installing PostgreSQL from Debian's packages (for the tests marked postgres)"
install 2>/dev/null || { $SUDO apt-get update -q >/dev/null && install; } \
    || echo "could not install PostgreSQL: tests marked postgres will be skipped" >&2
exit 0
