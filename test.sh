#!/usr/bin/env bash
# Runs the tests of every Go module in this repository with the race
# detector: the core and the modules that keep heavy dependencies apart
# (middleware/otel, examples/observability). Extra arguments go to
# go test, as in ./test.sh -count=1.
set -euo pipefail
cd "$(dirname "$0")"

for mod in $(find . -name go.mod -not -path './.git/*' | sort); do
	dir=$(dirname "$mod")
	echo "== go test -race $dir/..."
	(cd "$dir" && go test -race "$@" ./...)
done
