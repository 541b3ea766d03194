#!/usr/bin/env bash
# needs: torch
# esg-metric: hand-computable cases (linear model + integrated gradients +
# perturbation towards the baseline: infidelity 0; a constant explanation:
# max-sensitivity 0; deletion / insertion of a linear model), then
# infidelity and max-sensitivity against plain PyTorch with the same
# perturbations read from a stream, similarity and ground-truth scores
# against numpy (tests/py/ref_metric.py), output formats and errors.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

REF="$PYTHON $ESG_ROOT/tests/py/ref_metric.py"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PYTHON "$ESG_ROOT/tests/py/ref_attr.py" inputs fx in || { not_ok "input streams"; done_testing; }
A="esg-attr --threads 1"
M="esg-metric --threads 1"

# value TABLE METRIC: the values of a metric, one per line
values() { awk -F'\t' -v m="$2" 'NR > 1 && $7 == m { print $8 }' "$1"; }
# all_below TABLE METRIC LIMIT: every value finite and |v| <= LIMIT
all_below() { values "$1" "$2" | awk -v l="$3" 'BEGIN { n = 0 } { n++; v = $1 < 0 ? -$1 : $1; if ($1 == "nan" || v > l) bad = 1 } END { exit (bad || n == 0) }'; }

# ---- hand-computable ---------------------------------------------------------------
$A -m fx/linear.pt --method integrated_gradients -o ig_lin.st.zst in/lin.st.zst
$A -m fx/linear.pt --method saliency -o sal_lin.st.zst in/lin.st.zst
$A -m fx/linear.pt --method integrated_gradients --baseline const:0.5 -o igb_lin.st.zst in/lin.st.zst
check "linear + IG: infidelity towards the baseline" $M -m fx/linear.pt --metric infidelity \
	--param perturbation=baseline -o t1.tsv ig_lin.st.zst
check "... is 0 (float32 rounding: <= 1e-10)" all_below t1.tsv infidelity 1e-10
check "linear + IG from baseline 0.5: infidelity towards it is 0" sh -c \
	"$M -m fx/linear.pt --metric infidelity --param perturbation=baseline --param n_perturb_samples=25 -o t1b.tsv igb_lin.st.zst"
check "... three items" sh -c "test \$(awk -F'\t' 'NR>1' t1b.tsv | wc -l) = 3"
check "... values" all_below t1b.tsv infidelity 1e-10
check "linear + IG, Gaussian perturbations, multiply_by_inputs: 0 too" sh -c \
	"$M -m fx/linear.pt --metric infidelity -o t1c.tsv ig_lin.st.zst"
check "... (<= 1e-10)" all_below t1c.tsv infidelity 1e-10
check "linear + IG without dividing by x - baseline" $M -m fx/linear.pt --metric infidelity \
	--param multiply_by_inputs=false --param perturbation=baseline -o t1d.tsv ig_lin.st.zst
if all_below t1d.tsv infidelity 1e-6; then not_ok "... is not 0"; else ok "... is not 0"; fi
check "saliency of a linear model is constant: max-sensitivity" $M -m fx/linear.pt --metric max_sensitivity \
	--param perturb_radius=0.5 -o t2.tsv sal_lin.st.zst
check "... is exactly 0" sh -c "test \"\$(awk -F'\t' 'NR>1 { print \$8 }' t2.tsv | sort -u)\" = 0"

# deletion / insertion on the linear model: f(x) = W x + b, 4 features, one per step
check "deletion, insertion with curves" $M -m fx/linear.pt --metric deletion,insertion --param n_steps=4 \
	--curves curves.tsv -o t3.tsv ig_lin.st.zst
check "deletion / insertion = the closed form" $PYTHON - <<'PY'
import json, sys
import numpy as np
sys.path.insert(0, __import__("os").environ["ESG_ROOT"] + "/tests/py")
import safetensors_ref as st
W = np.array([[(c + 1) * (i - 1.5) for i in range(4)] for c in range(3)]); b = np.array([0.5, -1.0, 2.0])
meta, ts = st.read_stream("in/../ig_lin.st.zst")[0]
d = {t[0]: np.array(t[3], dtype=np.float64) for t in ts}
x, a = d["image"], d["attribution"]
tg = json.loads(meta["esg.target"]); tg = tg if isinstance(tg, list) else [tg] * len(x)
rows = [l.rstrip("\n").split("\t") for l in open("t3.tsv")][1:]
got = {(int(r[2]), r[6]): float(r[7]) for r in rows}
curves = [l.rstrip("\n").split("\t") for l in open("curves.tsv")][1:]
assert len(curves) == 3 * 2 * 5, len(curves)
for i in range(len(x)):
    o = np.lexsort((np.arange(4), -a[i]))
    f = lambda z: (W @ z + b)[tg[i]]
    for name in ("deletion", "insertion"):
        ys = []
        for k in range(5):
            z = x[i].copy() if name == "deletion" else np.zeros(4)
            z[o[:k]] = 0 if name == "deletion" else x[i][o[:k]]
            ys.append(f(z))
        full, none = (ys[0], ys[-1]) if name == "deletion" else (ys[-1], ys[0])
        y = [(v - none) / (full - none) for v in ys]
        auc = sum((y[k] + y[k + 1]) / 2 for k in range(4)) / 4
        assert abs(got[(i, name)] - auc) < 1e-4 * max(1, abs(auc)), (i, name, got[(i, name)], auc)
        cs = [float(c[7]) for c in curves if int(c[2]) == i and c[5] == name]
        assert np.allclose(cs, ys, rtol=1e-5, atol=1e-5), (cs, ys)
PY

# ---- against plain PyTorch, identical perturbations from a stream ------------------------
$REF perturb p3.st.zst in/x3d.st.zst 6 0.05 1
$REF perturb u3.st.zst in/x3d.st.zst 4 0.02 2 uniform
$REF perturb pl.st.zst in/lin.st.zst 5 0.1 3
for meth in integrated_gradients saliency input_x_gradient; do
	$A -m fx/net3d.pt --method $meth --param n_steps=16 -o $meth.st.zst in/x3d.st.zst 2>/dev/null ||
		$A -m fx/net3d.pt --method $meth -o $meth.st.zst in/x3d.st.zst
	check "net3d $meth: infidelity" $M -m fx/net3d.pt --metric infidelity --param perturbations=p3.st.zst -o i_$meth.tsv $meth.st.zst
	check "net3d $meth: infidelity = PyTorch reference" $REF infidelity fx/net3d.pt $meth.st.zst p3.st.zst i_$meth.tsv
	check "net3d $meth: normalised infidelity" $M -m fx/net3d.pt --metric infidelity --param normalize=true \
		--param perturbations=p3.st.zst -o in_$meth.tsv $meth.st.zst
	check "net3d $meth: normalised infidelity = PyTorch reference" $REF infidelity fx/net3d.pt $meth.st.zst p3.st.zst in_$meth.tsv normalize
	check "net3d $meth: max-sensitivity" $M -m fx/net3d.pt --metric max_sensitivity --param perturbations=u3.st.zst -o s_$meth.tsv $meth.st.zst
	check "net3d $meth: max-sensitivity = PyTorch reference (re-run in Python)" $REF sensitivity fx/net3d.pt $meth.st.zst u3.st.zst s_$meth.tsv
done
# random methods: the re-run replays the recorded seed (zero perturbation -> exactly 0)
$REF perturb z3.st.zst in/x3d.st.zst 2 0 1
$A -m fx/net3d.pt --method smoothgrad --param base=integrated_gradients --param n_steps=4 --param nt_samples=3 \
	--seed 9 -o nt.st.zst in/x3d.st.zst
$A -m fx/net3d.pt --method gradient_shap --baseline uniform:-1,1:3 --seed 4 -o gs.st.zst in/x3d.st.zst
check "smoothgrad(IG), gradient_shap: max-sensitivity at a zero perturbation" $M -m fx/net3d.pt \
	--metric max_sensitivity --param perturbations=z3.st.zst -o z.tsv nt.st.zst gs.st.zst
check "... is exactly 0 (the recorded seed is replayed)" sh -c "test \"\$(awk -F'\t' 'NR>1 { print \$8 }' z.tsv | sort -u)\" = 0"
for f in nt gs; do
	check "$f: max-sensitivity = PyTorch reference" sh -c "$M -m fx/net3d.pt --metric max_sensitivity \
		--param perturbations=u3.st.zst -o s_$f.tsv $f.st.zst && $REF sensitivity fx/net3d.pt $f.st.zst u3.st.zst s_$f.tsv"
done
check "linear saliency: infidelity = reference" sh -c "$M -m fx/linear.pt --metric infidelity --param perturbations=pl.st.zst -o il.tsv sal_lin.st.zst && $REF infidelity fx/linear.pt sal_lin.st.zst pl.st.zst il.tsv"
check "drawn perturbations are reproducible" sh -c "$M -m fx/net3d.pt --metric infidelity,max_sensitivity -o r1.tsv saliency.st.zst && $M -m fx/net3d.pt --metric infidelity,max_sensitivity -o r2.tsv saliency.st.zst && cmp r1.tsv r2.tsv"

# ---- similarity and ground truth against numpy -------------------------------------------
check "similarity 3D" $M --metric spearman,spearman_abs,ssim,ssim_abs,topk_iou --param topk=20 -o sim3.tsv \
	integrated_gradients.st.zst saliency.st.zst input_x_gradient.st.zst
check "similarity 3D = numpy (saliency)" $REF similarity integrated_gradients.st.zst saliency.st.zst sim3.tsv 20
check "similarity 3D = numpy (input x gradient)" $REF similarity integrated_gradients.st.zst input_x_gradient.st.zst sim3.tsv 20
check "a map against itself: every similarity is 1" sh -c "$M --metric spearman,ssim,topk_iou -o self.tsv saliency.st.zst saliency.st.zst && test \"\$(awk -F'\t' 'NR>1 { print \$8 }' self.tsv | sort -u)\" = 1"
$A -m fx/relu_module_script.pt --method saliency -o s2.st.zst in/x2d.st.zst
$A -m fx/relu_module_script.pt --method integrated_gradients -o i2.st.zst in/x2d.st.zst
check "similarity 2D" $M --metric spearman,ssim,ssim_abs,topk_iou -o sim2.tsv i2.st.zst s2.st.zst
check "similarity 2D = numpy" $REF similarity i2.st.zst s2.st.zst sim2.tsv
$PYTHON - <<'PY'
import sys, os
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import numpy as np, safetensors_ref as st
m = (np.random.default_rng(4).random((6, 6, 6)) < 0.3).astype(np.float32)
st.write_stream("mask.st.zst", [([("mask", m)], {"esg.format": "1"})])
try:
    import nibabel as nib
    nib.save(nib.Nifti1Image(m.astype(np.uint8), np.eye(4)), "mask.nii.gz")
except ImportError:
    pass
PY
check "ground truth with a stream mask" $M --metric mass_in_mask,pointing_game,auroc --mask mask.st.zst -o gt.tsv integrated_gradients.st.zst
check "ground truth = numpy" $REF truth integrated_gradients.st.zst mask.st.zst gt.tsv
if [ -f mask.nii.gz ]; then
	check "ground truth with a NIfTI mask = with the stream mask" bash -c "$M --metric mass_in_mask,pointing_game,auroc --mask mask.nii.gz -o gtn.tsv integrated_gradients.st.zst && diff <(cut -f1-8 gt.tsv) <(cut -f1-8 gtn.tsv)"
else
	skip "no nibabel"
fi

# ---- formats -----------------------------------------------------------------------------
check "jsonl" $M --metric spearman --format jsonl -o sim.jsonl saliency.st.zst integrated_gradients.st.zst
check "jsonl rows carry the table's columns" $PYTHON -c '
import json
rows = [json.loads(l) for l in open("sim.jsonl")]
assert len(rows) == 2 and set(rows[0]) == {"source", "record", "item", "method", "params", "target", "metric", "value", "metric_params"}
assert rows[0]["method"] == "integrated_gradients" and rows[0]["metric_params"]["reference"] == "saliency.st.zst"'
check "TSV header" sh -c "head -1 sim3.tsv | grep -qx 'source	record	item	method	params	target	metric	value	metric_params'"
check "reads stdin" sh -c "$M -m fx/linear.pt --metric infidelity < ig_lin.st.zst | grep -q '^stdin	0	0	integrated_gradients'"

# ---- errors ------------------------------------------------------------------------------
expect_fail "unknown metric" 2 "unknown metric 'nope'" $M --metric nope saliency.st.zst
expect_fail "infidelity needs a model" 2 "needs the model" $M --metric infidelity saliency.st.zst
expect_fail "similarity needs two inputs" 2 "at least one more" $M --metric ssim saliency.st.zst
expect_fail "unknown --param" 2 "unknown key 'nsteps'" $M --metric deletion -m fx/net3d.pt --param nsteps=3 saliency.st.zst
expect_fail "perturbations of the wrong shape" 1 "do not fit the image" $M -m fx/linear.pt --metric infidelity \
	--param perturbations=p3.st.zst -o bad1.tsv ig_lin.st.zst
no_file "no table after a failure" bad1.tsv
expect_fail "mask of the wrong shape" 1 "mask.s spatial shape \[6, 6\] is not the attribution.s \[8, 8\]" $M --metric auroc --mask mask.st.zst -o bad2.tsv s2.st.zst
no_file "no table after a bad mask" bad2.tsv
expect_fail "no mask" 1 "no mask" $M --metric auroc s2.st.zst
expect_fail "a record without attribution" 1 "no tensor 'attribution'" $M --metric auroc --mask mask.st.zst in/x3d.st.zst
check "--help" $M --help
done_testing
