#!/usr/bin/env bash
# Runs the tests of every Go module in this repository with the race
# detector: every directory that holds a go.mod, found afresh each run, so
# a new module is tested without editing this script. Extra arguments go
# to go test, as in ./test.sh -count=1.
set -euo pipefail
cd "$(dirname "$0")"

for mod in $(find . -name go.mod -not -path './.git/*' | sort); do
	dir=$(dirname "$mod")
	echo "== go test -race $dir/..."
	(cd "$dir" && go test -race "$@" ./...)
done
