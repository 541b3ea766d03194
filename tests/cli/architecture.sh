#!/usr/bin/env bash
# The include rules of doc/architecture.md hold on the tree (tests/check_layout.py),
# and the check catches each kind of violation when one is planted in a copy.
. "$(dirname "$0")/lib.sh"
"$PYTHON" "$ESG_ROOT/tests/check_layout.py" "$ESG_ROOT" >rules.tap
rc=$?
while IFS= read -r line; do
	case "$line" in
	"ok "*) ok "tree: ${line#ok * - }" ;;
	"not ok "*) not_ok "tree: ${line#not ok * - }" ;;
	"#"*) echo "$line" ;;
	esac
done <rules.tap
[ $rc = 0 ] && ok "check_layout.py passes on the tree" || not_ok "check_layout.py exits $rc on the tree"

# plant FILE LINE WANT: a copy of the tree with LINE added to FILE fails the
# check, and its output names the rule WANT.
plant() {
	local file=$1 line=$2 want=$3
	rm -rf copy && mkdir copy && cp -R "$ESG_ROOT/lib" "$ESG_ROOT/tools" "$ESG_ROOT/tests" "$ESG_ROOT/doc" copy/
	printf '%s\n' "$line" >>"copy/$file"
	if "$PYTHON" "$ESG_ROOT/tests/check_layout.py" copy >planted.tap; then
		not_ok "planted $line in $file: the check passed"
	elif grep -q "^not ok .*$want" planted.tap; then ok "planted $line in $file: caught ($want)"
	else not_ok "planted $line in $file: failed for another reason"; grep '^not ok' planted.tap | sed 's/^/#   /'; fi
}
plant lib/stream/stream.c '#include <torch/script.h>' "libtorch headers only"
plant lib/stream/stream.c '#include "attr/attr.h"' "each part includes only"
plant lib/image/load.c '#include "render/render.h"' "each part includes only"
plant lib/attr/gradient/gradient.c '#include "attr/perturb/perturb.h"' "no attribution family"
plant tools/esg-attr.c '#include "attr/family.h"' "internal headers"
plant tools/esg-render.c '#include "shim/internal.hpp"' "internal headers"
plant lib/render/render.c '#include "report.h"' "quoted includes name"
plant lib/eval/metric.c '#include "nowhere/x.h"' "quoted includes name"
rm -rf copy && mkdir copy && cp -R "$ESG_ROOT/lib" "$ESG_ROOT/tools" "$ESG_ROOT/tests" "$ESG_ROOT/doc" copy/
mkdir copy/lib/extra && echo 'int x;' >copy/lib/extra/x.c
if "$PYTHON" "$ESG_ROOT/tests/check_layout.py" copy >planted.tap; then not_ok "a new lib/ folder without a rule passes"
else grep -q '^not ok .*every lib/ folder has an include rule (extra)' planted.tap && ok "a new lib/ folder without a rule is caught" || not_ok "new folder: wrong reason"; fi
done_testing
