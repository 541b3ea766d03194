#!/usr/bin/env bash
# needs: torch
# The memory budget (--memory, default 80% of what the process may use):
# --internal-batch auto sizes every batch to it from what the model's calls
# measured; a call that does not fit fails with one line (how much, what is
# allowed, what to do), exit 1, nothing written -- never the OOM killer; an
# explicit --internal-batch N is obeyed and refused when it does not fit.
# Maps do not depend on the budget beyond float rounding.  Peak RSS is
# measured (ru_maxrss of the child) on the 64^3 U-Net phantom.
. "$(dirname "$0")/lib.sh"

A=esg-attr
M=esg-metric
esg-load --normalise zscore --multiple 16 "$ESG_ROOT/share/data/phantom1000_image.nii.gz" -o ph.st.zst ||
	{ not_ok "esg-load the phantom"; done_testing; }
esg-wrap -m "$ESG_ROOT/share/models/unet3d.pt" --reduce fixed-mask --input ph.st.zst -o w.pt 2>err ||
	{ not_ok "esg-wrap the U-Net ($(cat err))"; done_testing; }

# peak: run a command, print its peak RSS in MiB on fd 3, keep its exit status
cat >peak.py <<'PY'
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
    f.write("%d\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024))
sys.exit(rc)
PY
peak() { local out=$1; shift; $PYTHON peak.py "$out" "$@"; }

# max batch of the grad calls, and the number of grad calls, from esg.model_calls
cat >calls.py <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
calls = json.loads(st.read_stream(sys.argv[2])[0][0]["esg.model_calls"])
grad = [c for c in calls if c["grad"]] or calls
print(max(c["batch"] for c in grad), sum(c["count"] for c in grad))
PY
calls() { $PYTHON calls.py "$ESG_ROOT/tests/py" "$1"; }

# ---- options -------------------------------------------------------------------
for t in esg-attr esg-metric esg-wrap esg-randomise; do
	check "$t --help names --memory" bash -c "$t --help | grep -q -- '--memory SIZE|PCT'"
done
check "esg-attr --help names --internal-batch auto|N" bash -c "$A --help | grep -q -- '--internal-batch auto|N'"
expect_fail "--memory 10X is refused" 2 "^esg-attr: error: --memory: '10X' is not a size" \
	$A -m w.pt --method saliency --memory 10X -o out.st.zst ph.st.zst
expect_fail "--memory 150% is refused" 2 "^esg-attr: error: --memory: 150% is more than 100%$" \
	$A -m w.pt --method saliency --memory 150% -o out.st.zst ph.st.zst
expect_fail "--memory 1M is refused (less than 64M)" 2 "^esg-attr: error: --memory: 1M is less than 64M$" \
	$A -m w.pt --method saliency --memory 1M -o out.st.zst ph.st.zst
expect_fail "--internal-batch 0 is refused" 2 "^esg-attr: error: --internal-batch: 0 is out of range" \
	$A -m w.pt --method saliency --internal-batch 0 -o out.st.zst ph.st.zst
no_file "nothing written by refused options" out.st.zst

# ---- batches sized to the budget -------------------------------------------------
IG="--method integrated_gradients --param n_steps=8 --target 1 --threads 2"
peak big.mb $A -m w.pt $IG --memory 8G -o big.st.zst ph.st.zst 2>err.big
check "integrated gradients with --memory 8G" test -s big.st.zst
read -r bmax bn < <(calls big.st.zst)
[ "${bmax:-0}" -ge 6 ] && ok "8G: up to $bmax items a call ($bn calls)" || not_ok "8G: batches of $bmax ($(cat err.big))"
check "the record says esg.internal_batch auto" bash -c "zstd -dc big.st.zst | head -c 8000 | grep -aq '\"esg.internal_batch\":\"auto\"'"

peak small.mb $A -m w.pt $IG --memory 450M -o small.st.zst ph.st.zst 2>err.small
check "integrated gradients with --memory 450M completes" test -s small.st.zst
read -r smax sn < <(calls small.st.zst)
[ "${smax:-9}" -lt "${bmax:-0}" ] && ok "450M: smaller batches ($smax items a call, $sn calls)" ||
	not_ok "450M: batches of $smax ($(cat err.small))"
mb=$(cat small.mb)
# the budget covers the whole process; what the allocator does not see
# (small blocks, timing) may go a little past it
[ "$mb" -le 495 ] && ok "450M: peak RSS $mb MiB (within 10%; unbudgeted: $(cat big.mb) MiB)" ||
	not_ok "450M: peak RSS $mb MiB"
$A -m w.pt $IG --internal-batch 1 -o one.st.zst ph.st.zst
cat >same.py <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, safetensors_ref as st
def attribution(p):
    return next(t[3] for t in st.read_stream(p)[0][1] if t[0] == "attribution")
a = attribution(sys.argv[2])
for p in sys.argv[3:]:
    b = attribution(p)
    err = float(np.abs(a - b).max() / np.abs(a).max())
    if err > 1e-4:
        sys.exit("%s: max difference %.3g of the map's maximum" % (p, err))
PY
check "the maps with 8G, 450M and --internal-batch 1 agree within 1e-4 of the maximum (batch-size rounding: 1.8e-5 seen)" \
	$PYTHON same.py "$ESG_ROOT/tests/py" big.st.zst small.st.zst one.st.zst

# the other families and the metrics go by the same budget (700M: DeepLift's
# call is two items, [x; baseline])
for m in "occlusion --param sliding_window_shapes=1,16,16,16 --param strides=1,16,16,16" \
	"layer_gradcam --layer model.dec2" "deeplift"; do
	name=${m%% *}
	$A -m w.pt --method $m --target 1 --threads 2 --memory 8G -o ${name}8g.st.zst ph.st.zst 2>err &&
		$A -m w.pt --method $m --target 1 --threads 2 --memory 700M -o ${name}700.st.zst ph.st.zst 2>>err ||
		{ not_ok "$name at 8G and 700M ($(tail -n 2 err))"; continue; }
	check "$name: the maps with 8G and 700M agree" $PYTHON same.py "$ESG_ROOT/tests/py" ${name}8g.st.zst ${name}700.st.zst
done
$M -m w.pt --metric deletion,infidelity --threads 2 --memory 8G -o m8g.tsv big.st.zst 2>err &&
	$M -m w.pt --metric deletion,infidelity --threads 2 --memory 450M -o m450.tsv big.st.zst 2>>err &&
	check "esg-metric: the same values with 8G and 450M (within 1e-6 relative)" $PYTHON - m8g.tsv m450.tsv <<'PY' ||
import csv, sys
a, b = [list(csv.DictReader(open(p), delimiter="\t")) for p in sys.argv[1:]]
assert len(a) == len(b) == 2, (len(a), len(b))
for r, q in zip(a, b):
    x, y = float(r["value"]), float(q["value"])
    assert r["metric"] == q["metric"] and abs(x - y) <= 1e-6 * max(abs(x), 1e-12), (r["metric"], x, y)
PY
	not_ok "esg-metric at 8G / 450M ($(tail -n 2 err))"

# ESG_MEMORY is the default of --memory; pipelines/run-job shares the budget
# among make's parallel jobs through it
expect_fail "ESG_MEMORY=lots is refused" 2 "^esg-attr: error: ESG_MEMORY: 'lots' is not a size" \
	env ESG_MEMORY=lots $A -m w.pt $IG -o env.st.zst ph.st.zst
ESG_MEMORY=450M $A -m w.pt $IG -o env.st.zst ph.st.zst 2>err.env
read -r emax en < <(calls env.st.zst 2>/dev/null)
[ "${emax:-9}" = "$smax" ] && [ "$en" = "$sn" ] && ok "ESG_MEMORY=450M batches as --memory 450M ($emax items a call)" ||
	not_ok "ESG_MEMORY=450M: batches ${emax:-?} ($(cat err.env))"
ESG_MEMORY=450M $A -m w.pt $IG --memory 8G -o env8.st.zst ph.st.zst
read -r emax en < <(calls env8.st.zst 2>/dev/null)
[ "${emax:-0}" = "$bmax" ] && ok "--memory wins over ESG_MEMORY" || not_ok "--memory 8G under ESG_MEMORY=450M: batches ${emax:-?}"
for j in 1 2 4; do
	MAKEFLAGS=" -j$j --jobserver-auth=3,4" "$ESG_ROOT/pipelines/run-job" pj pj/t$j --kind attr -- \
		bash -c 'echo "${ESG_MEMORY:-unset}" >"$0"' pj/t$j >/dev/null
done
[ "$(cat pj/t1) $(cat pj/t2) $(cat pj/t4)" = "unset 40% 20%" ] &&
	ok "run-job under make -jN: ESG_MEMORY=80/N% for each job (-j1: unset, -j2: 40%, -j4: 20%)" ||
	not_ok "run-job ESG_MEMORY: $(cat pj/t1) $(cat pj/t2) $(cat pj/t4)"
check "and the job's log says so" grep -q '^memory: ESG_MEMORY=40%$' pj/logs/t2.log
MAKEFLAGS=" -j2" ESG_MEMORY=3G "$ESG_ROOT/pipelines/run-job" pj pj/t5 --kind attr -- \
	bash -c 'echo "$ESG_MEMORY" >"$0"' pj/t5 >/dev/null
check "a given ESG_MEMORY is kept" grep -qx 3G pj/t5

# ---- what does not fit ------------------------------------------------------------
echo keep >old.st.zst
cp old.st.zst kept.st.zst
expect_fail "250M: one item does not fit, nor do tiles (the probes), nor patches -- one line, exit 1" 1 \
	"^esg-attr: error: ph.st.zst: record 1: integrated_gradients: out of the memory budget: a model call on one item needs more than [0-9.]+[MG] and --memory allows 250M \([0-9.]+[MG] of it held outside model calls\); run it patch-wise \(--patch SIZE\) or give a larger --memory; it cannot go by tiles either: off: out of the memory budget: .*; nor patch-wise: no patch of 32 voxels a side fits$" \
	peak tiny.mb $A -m w.pt $IG --memory 250M -o old.st.zst ph.st.zst
check "and the previous output is kept" cmp old.st.zst kept.st.zst
mb=$(cat tiny.mb)
[ "$mb" -le 275 ] && ok "250M: it stopped at $mb MiB" || not_ok "250M: peak RSS $mb MiB"
# a layer method (no tiles) whose one item does not fit goes patch-wise
# by itself: the largest patch the budget takes, the volume's target; the
# same map as --patch with that size and --target
$PYTHON -c "
import numpy as np
np.random.seed(0)
np.save('v.npy', (np.random.randn(1, 1, 96, 96, 80) * 0.5).astype(np.float32))"
esg-load --layout NCDHW v.npy -o v.st.zst
esg-wrap -m "$ESG_ROOT/share/models/unet3d.pt" --reduce fixed-mask --input v.st.zst -o wv.pt 2>/dev/null
GC="--method layer_gradcam --layer model.dec1 --threads 2"
cat >auto.py <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, safetensors_ref as st
meta, ts = st.read_stream(sys.argv[2])[0]
why = meta.get("esg.patch_auto", "")
if not why.startswith("one item does not fit the memory budget: patches of "):
    sys.exit("esg.patch_auto: %r" % why)
import json
print(",".join(str(int(v)) for v in json.loads(meta["esg.patch"])), meta["esg.target"])
PY
cat >auto_same.py <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, safetensors_ref as st
a, b = [next(t[3] for t in st.read_stream(p)[0][1] if t[0] == "attribution") for p in sys.argv[2:4]]
err = float(np.abs(a - b).max())
sys.exit(0 if err <= 1e-5 * float(np.abs(b).max()) + 1e-7 else "maps differ by %g" % err)
PY
if peak auto.mb $A -m wv.pt $GC --memory 500M -o gauto.st.zst v.st.zst 2>err.auto &&
	read -r psize ptarget < <($PYTHON auto.py "$ESG_ROOT/tests/py" gauto.st.zst 2>>err.auto) &&
	$A -m wv.pt $GC --patch "$psize" --target "$ptarget" -o gpatch.st.zst v.st.zst 2>>err.auto &&
	$PYTHON auto_same.py "$ESG_ROOT/tests/py" gauto.st.zst gpatch.st.zst 2>>err.auto; then
	ok "Grad-CAM at 96x96x80 under 500M: patch-wise by itself ($psize, target $ptarget), the map of --patch $psize --target $ptarget"
else
	not_ok "Grad-CAM under 500M, patch-wise by itself: $(tail -n 2 err.auto)"
fi
mb=$(cat auto.mb 2>/dev/null || echo 0)
[ "$mb" -le 550 ] && ok "and its peak RSS, $mb MiB, is within 10% of 500M" || not_ok "auto patches: peak RSS $mb MiB under 500M"
expect_fail "--internal-batch 8 that does not fit: refused, with what to do" 1 \
	"out of the memory budget: a model call on 8 items needs more than .* use a smaller --internal-batch \(or auto\) or a larger --memory$" \
	$A -m w.pt $IG --internal-batch 8 --memory 600M -o ib8.st.zst ph.st.zst
no_file "nothing written" ib8.st.zst
expect_fail "esg-metric: a budget too small, one line" 1 "^esg-metric: error: .*out of the memory budget" \
	$M -m w.pt --metric deletion --threads 2 --memory 200M -o m.tsv big.st.zst
no_file "no table written" m.tsv

# ---- the default follows the cgroup's limit ----------------------------------------
# In a memory cgroup of 700 MiB the run without a budget (peak $(cat big.mb)
# MiB above) would meet the OOM killer; the default budget sizes it to fit.
cg=/sys/fs/cgroup/memory/esg-test-$$
if [ "$(id -u)" = 0 ] && [ -w /sys/fs/cgroup/memory ] && mkdir "$cg" 2>/dev/null; then
	echo $((700 << 20)) >"$cg/memory.limit_in_bytes"
	bash -c "echo \$\$ >'$cg/cgroup.procs' && exec $A -m w.pt $IG -o cg.st.zst ph.st.zst" 2>err.cg
	rc=$?
	read -r cmax cn < <(calls cg.st.zst 2>/dev/null)
	[ $rc = 0 ] && [ "${cmax:-9}" -lt "${bmax:-0}" ] &&
		ok "in a 700M cgroup the default run fits (batches of $cmax, $cn calls)" ||
		not_ok "in a 700M cgroup: exit $rc, batches ${cmax:-?} ($(tail -n 1 err.cg))"
	check "and its map is the same" $PYTHON same.py "$ESG_ROOT/tests/py" big.st.zst cg.st.zst
	rmdir "$cg"
else
	skip "no memory cgroup to make here (not root, or cgroup v1 not mounted writable)"
	skip "no memory cgroup"
fi

done_testing
