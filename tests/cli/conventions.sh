#!/usr/bin/env bash
# What every esg-* tool promises: --help/--version on stdout, exit 2 with one
# line for a usage error, checked writes, no binary stream to a terminal.
. "$(dirname "$0")/lib.sh"
tools=()
for b in "$ESG_BIN"/esg-*; do
	[ -x "$b" ] && tools+=("$(basename "$b")")
done
[ ${#tools[@]} -gt 0 ] || not_ok "tools were built in $ESG_BIN"
for t in "${tools[@]}"; do
	"$t" --help >help.txt 2>help.err
	rc=$?
	if [ $rc = 0 ] && grep -q "Usage: $t" help.txt && [ ! -s help.err ]; then ok "$t --help: usage on stdout, exit 0"
	else not_ok "$t --help (exit $rc)"; fi
	check "$t -h is --help" bash -c "$t -h | cmp -s - help.txt"
	v=$("$t" --version)
	[[ $v =~ ^$t\ [0-9]+\.[0-9]+\.[0-9]+$ ]] && ok "$t --version: $v" || not_ok "$t --version: '$v'"
	expect_fail "$t --no-such-option: usage error" 2 "^$t: " "$t" --no-such-option
	[ "$(grep -c "$t: error" "$T/.err")" = 1 ] && ok "$t: one error line" || not_ok "$t: one error line ($(cat "$T/.err"))"
	expect_fail "$t --help >/dev/full: write error is exit 1" 1 "$t: error: .*(write|space)" bash -c "$t --help >/dev/full"
	[ -f "$ESG_ROOT/man/$t.1" ] && ok "$t has a man page" || not_ok "$t has a man page"
	if [ -f "$ESG_ROOT/man/$t.1" ]; then
		check "$t man page renders without warnings" bash -c "MANWIDTH=80 man --warnings -l '$ESG_ROOT/man/$t.1' 2>&1 >/dev/null | (! grep .)"
	fi
done
# A binary stream is never written to a terminal: script(1) gives esg-load a tty.
if command -v script >/dev/null && [ -x "$ESG_BIN/esg-load" ]; then
	$PYTHON -c "import numpy as np; np.save('a.npy', np.zeros((4,4), np.float32))"
	script -qec "esg-load a.npy" /dev/null >tty.out 2>&1
	rc=$?
	grep -q "terminal" tty.out && [ $rc = 2 ] && ok "esg-load refuses to write a stream to a terminal" ||
		not_ok "esg-load refuses to write a stream to a terminal (exit $rc: $(head -c 200 tty.out))"
else
	skip "script(1) or esg-load missing"
fi
done_testing
