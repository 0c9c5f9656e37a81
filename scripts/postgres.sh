#!/usr/bin/env bash
# A throw-away PostgreSQL server for the outbox module's tests, from
# Debian's postgresql package: no container, no mock.
#
#   bash scripts/postgres.sh install      # apt-get install postgresql if initdb is missing
#   bash scripts/postgres.sh start DIR    # initdb in DIR, start on a free port of
#                                         # 127.0.0.1, print the DSN (also in DIR/dsn)
#   bash scripts/postgres.sh stop DIR     # stop it and remove DIR
#
# The outbox tests need none of this when the package is installed: their
# TestMain starts a server of their own unless OUTBOX_POSTGRES_DSN names one.
# As root, the server runs as the postgres user, which initdb requires.
set -euo pipefail

bindir() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		if [ -x "$d/initdb" ]; then
			echo "$d"
			return
		fi
	done
	command -v initdb >/dev/null && dirname "$(command -v initdb)" && return
	return 1
}

as_owner() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

case "${1:-}" in
install)
	if bindir >/dev/null; then
		echo "postgresql is installed: $(bindir)"
		exit 0
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq postgresql >/dev/null
	# Debian starts a cluster of its own on port 5432: the tests use none.
	if command -v pg_ctlcluster >/dev/null; then
		for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do
			pg_ctlcluster "${c%/*}" "${c#*/}" stop || true
		done
	fi
	echo "postgresql installed: $(bindir)"
	;;
start)
	dir=${2:?usage: postgres.sh start DIR}
	bin=$(bindir) || { echo "postgresql is not installed: run bash scripts/postgres.sh install" >&2; exit 1; }
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
	as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		shuf -i 20000-60000 -n 1)
	as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir" start >/dev/null
	dsn="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
	echo "$dsn" >"$dir/dsn"
	echo "$dsn"
	;;
stop)
	dir=${2:?usage: postgres.sh stop DIR}
	bin=$(bindir)
	as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
	rm -rf "$dir"
	;;
*)
	sed -n '2,13p' "$0"
	exit 2
	;;
esac
