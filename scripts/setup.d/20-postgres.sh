# PostgreSQL's server binaries (initdb, pg_ctl, postgres, psql), which the
# PostgreSQL tests (tests/daemon/pg.rs) run into a temporary directory on a
# free loopback port. Debian puts them under /usr/lib/postgresql/*/bin.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
