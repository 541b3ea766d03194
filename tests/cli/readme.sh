#!/usr/bin/env bash
# Every README example line ("    $ CMD") runs, in order, in one scratch folder.
# needs: torch  (later examples use the model tools)
. "$(dirname "$0")/lib.sh"
grep -E '^    \$ ' "$ESG_ROOT/README.md" | sed 's/^    \$ //' >"$T/examples"
[ -s "$T/examples" ] || not_ok "README has examples"
# The examples name shipped files relative to the repository root.
ln -s "$ESG_ROOT/share" "$T/share"
ln -s "$ESG_ROOT/configs" "$T/configs"
ln -s "$ESG_ROOT/pipelines" "$T/pipelines"
while IFS= read -r cmd; do
	check "README: $cmd" bash -c "cd '$T' && $cmd"
done <"$T/examples"
done_testing
