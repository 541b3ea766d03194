#!/usr/bin/env bash
# needs: torch
# Outputs are all or nothing: a tool killed while writing -o FILE, even by
# SIGKILL, leaves no file behind (the output is an unnamed O_TMPFILE until
# it is complete), and a failing run leaves the previous FILE untouched.
. "$(dirname "$0")/lib.sh"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PYTHON "$ESG_ROOT/tests/py/ref_attr.py" inputs fx in >/dev/null || { not_ok "input streams"; done_testing; }

mkdir out
mkfifo feed
# esg-attr writes the first record, then waits for more input on the FIFO.
esg-attr --threads 1 -m fx/linear.pt --method saliency --target 0 -o out/a.st.zst <feed &
pid=$!
exec 3>feed
cat in/lin.st.zst >&3
unnamed=0
for _ in $(seq 50); do
	if ls -l /proc/$pid/fd 2>/dev/null | grep -q '(deleted)'; then unnamed=1; break; fi
	sleep 0.2
done
[ $unnamed = 1 ] && ok "the output is open as an unnamed file while the tool runs" ||
	not_ok "the output is open as an unnamed file while the tool runs ($(ls -l /proc/$pid/fd 2>&1 | tail -3))"
kill -9 $pid
wait $pid 2>/dev/null
exec 3>&-
[ -z "$(ls -A out)" ] && ok "SIGKILL mid-write leaves nothing in the output folder" ||
	not_ok "SIGKILL mid-write leaves nothing ($(ls -A out))"

# SIGTERM: the same, through the signal handler.
esg-attr --threads 1 -m fx/linear.pt --method saliency --target 0 -o out/b.st.zst <feed &
pid=$!
exec 3>feed
cat in/lin.st.zst >&3
sleep 1
kill -TERM $pid
wait $pid 2>/dev/null
rc=$?
exec 3>&-
[ -z "$(ls -A out)" ] && [ $rc -ne 0 ] && ok "SIGTERM mid-write: non-zero exit, nothing left" ||
	not_ok "SIGTERM mid-write: exit $rc, left: $(ls -A out)"

# A run that fails keeps the old output as it was.
esg-attr --threads 1 -m fx/linear.pt --method saliency --target 0 -o out/c.st.zst in/lin.st.zst
cp out/c.st.zst before.st.zst
expect_fail "a failing run exits 1" 1 "target 9" \
	esg-attr --threads 1 -m fx/linear.pt --method saliency --target 9 -o out/c.st.zst in/lin.st.zst
cmp -s out/c.st.zst before.st.zst && ok "a failing run leaves the previous output untouched" ||
	not_ok "a failing run leaves the previous output untouched"
[ "$(ls -A out)" = c.st.zst ] && ok "and no temporary file" || not_ok "and no temporary file ($(ls -A out))"
done_testing
