# lib.sh - helpers for the CLI tests (TAP).  Source it from tests/cli/*.sh.
# Each test runs in its own scratch folder $T, removed at exit.
# Put "# needs: torch" in a test script that needs libtorch tools.
set -u
ESG_ROOT=${ESG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PYTHON=${PYTHON:-/usr/bin/python3}
export PATH="${ESG_BIN:-$ESG_ROOT/build/bin}:$PATH"
T=$(mktemp -d "${TMPDIR:-/tmp}/esg-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
_n=0
_fail=0
ok() { _n=$((_n + 1)); echo "ok $_n - $*"; }
not_ok() { _n=$((_n + 1)); _fail=1; echo "not ok $_n - $*"; }
skip() { _n=$((_n + 1)); echo "ok $_n - # SKIP $*"; }
# check DESC CMD...: passes when CMD exits 0
check() { local d=$1; shift; if "$@" >"$T/.out" 2>"$T/.err"; then ok "$d"; else not_ok "$d"; sed 's/^/#   /' "$T/.err" | head -5; fi; }
# expect_fail DESC CODE PATTERN CMD...: CMD exits CODE, stderr is one line matching PATTERN (grep -E)
expect_fail() {
	local d=$1 code=$2 pat=$3; shift 3
	"$@" >"$T/.out" 2>"$T/.err"
	local rc=$?
	if [ "$rc" = "$code" ] && grep -qE "$pat" "$T/.err"; then ok "$d"
	else not_ok "$d (exit $rc, want $code; stderr: $(head -c 300 "$T/.err"))"; fi
}
# no_file DESC PATH...: none of the paths exist (no partial output left)
no_file() { local d=$1; shift; for p in "$@"; do [ -e "$p" ] && { not_ok "$d ($p exists)"; return; }; done; ok "$d"; }
done_testing() { echo "1..$_n"; exit $_fail; }
