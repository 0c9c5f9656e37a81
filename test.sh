#!/usr/bin/env bash
# Runs the tests of every Go module in this repository with the race
# detector: every directory that holds a go.mod, found afresh each run, so
# a new module is tested without editing this script. Extra arguments go
# to go test, as in ./test.sh -count=1.
#
# A failing module does not stop the run: every module is tested, and the
# summary at the end names each one that failed. The exit status is 1 when
# any failed.
set -uo pipefail
cd "$(dirname "$0")"

modules=$(find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
count=$(printf '%s\n' "$modules" | wc -l)

cat <<EOF
Testing $count Go modules with the race detector. On a fresh machine the
first module downloads the dependencies and every module compiles its
tests with -race, which takes a few minutes in all; later runs use Go's
caches. Each module prints its packages as they finish.
EOF

# The outbox module's tests run against a real PostgreSQL, which they
# start themselves from Debian's postgresql package: install it when it is
# missing (as root; elsewhere those tests fail and say why).
if [ -f outbox/go.mod ]; then
	echo
	echo "== PostgreSQL for the outbox tests"
	bash scripts/postgres.sh install || echo "could not install postgresql: the outbox tests will fail"
fi

failed=()
i=0
for dir in $modules; do
	i=$((i + 1))
	printf '\n== [%d/%d] %s: downloading modules, then go test -race ./...\n' "$i" "$count" "$dir"
	start=$SECONDS
	if (cd "$dir" && go mod download && go test -race "$@" ./...); then
		printf -- '-- %s: ok in %ds\n' "$dir" $((SECONDS - start))
	else
		printf -- '-- %s: FAILED after %ds\n' "$dir" $((SECONDS - start))
		failed+=("$dir")
	fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAIL: %d of %d modules failed:\n' "${#failed[@]}" "$count"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
printf 'ok: all %d modules passed\n' "$count"
