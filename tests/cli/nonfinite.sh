#!/usr/bin/env bash
# needs: torch
# NaN / Inf are an error, not a map: every libtorch tool checks the tensors it
# reads, the shim checks a model's parameters and every model output, and
# esg-attr checks the map it is about to write -- one line naming the record,
# the tensor and how many values, exit 1, no output.  --allow-nonfinite lets
# them through.  And a fixed-mask score over 50 M voxels keeps the change one
# voxel makes (the wrappers sum in float64: share/wrappers/sum.py).
. "$(dirname "$0")/lib.sh"

cat >fixtures.py <<'PY'
import torch, numpy as np
torch.manual_seed(0)
class Lin(torch.nn.Module):          # [N, 1, 8, 8] -> [N, 2]
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 2)
    def forward(self, x):
        return self.fc(x.flatten(1))
class Log(torch.nn.Module):          # NaN scores for negative input
    def forward(self, x):
        s = torch.log(x).flatten(1).sum(1)
        return torch.stack([s, -s], 1)
class Sqrt(torch.nn.Module):         # finite scores, infinite gradient at 0
    def forward(self, x):
        s = torch.sqrt(x.abs()).flatten(1).sum(1)
        return torch.stack([s, -s], 1)
class Seg(torch.nn.Module):          # [N, 1, ...] -> [N, 2, ...]: channels -x, x
    def forward(self, x):
        return torch.cat([-x, x], 1)
x = torch.zeros(1, 1, 8, 8)
torch.jit.trace(Lin().eval(), x).save("lin.pt")
bad = Lin().eval()
with torch.no_grad():
    bad.fc.weight[1, 5] = float("nan")
torch.jit.trace(bad, x).save("nanparam.pt")
torch.jit.trace(Log().eval(), x).save("log.pt")
torch.jit.trace(Sqrt().eval(), x).save("sqrt.pt")
torch.jit.trace(Seg().eval(), torch.zeros(1, 1, 4, 4, 4)).save("seg.pt")
rng = np.random.default_rng(0)
a = rng.standard_normal((8, 8)).astype(np.float32)
np.save("ok.npy", a)
np.save("neg.npy", -np.abs(a) - 0.1)
z = np.abs(a) + 0.1
np.save("pos.npy", z)
z[2, 3] = 0.0
np.save("zero.npy", z)
a[3, 5] = np.nan
np.save("nan.npy", a)
a[0, 0] = np.inf
a[7, 7] = -np.inf
np.save("naninf.npy", a)
PY
$PYTHON fixtures.py || { not_ok "fixture models"; done_testing; }
for f in ok pos neg zero nan naninf; do esg-load $f.npy -o $f.esg || not_ok "esg-load $f.npy"; done

# inputs
expect_fail "esg-attr: NaN in the image" 1 \
	"^esg-attr: error: nan.esg: record 1: tensor 'image' has 1 non-finite value \(NaN or Inf\) of 64; fix the input or pass --allow-nonfinite$" \
	esg-attr -m lin.pt --method saliency -o out.esg nan.esg
no_file "no output left" out.esg
expect_fail "esg-attr: NaN and +-Inf counted" 1 "tensor 'image' has 3 non-finite values \(NaN or Inf\) of 64" \
	esg-attr -m lin.pt --method occlusion -o out.esg naninf.esg
test "$(wc -l <.err)" = 1 && ok "one line on stderr" || not_ok "one line on stderr: $(cat .err)"
check "--allow-nonfinite lets the input through" esg-attr -m lin.pt --method saliency --allow-nonfinite -o allowed.esg nan.esg
[ -s allowed.esg ] && ok "--allow-nonfinite: the map is written" || not_ok "--allow-nonfinite: no map"

# the model: parameters, output
expect_fail "esg-attr: NaN in a model parameter" 1 "model 'nanparam.pt': parameter 'fc.weight' has 1 non-finite value" \
	esg-attr -m nanparam.pt --method saliency -o out.esg ok.esg
expect_fail "esg-randomise: NaN in a model parameter" 1 "parameter 'fc.weight' has 1 non-finite value" \
	esg-randomise -m nanparam.pt --mode cascading --layers fc -o rnd
no_file "esg-randomise: no output left" rnd
expect_fail "esg-attr: the model's output is NaN (gradient method)" 1 \
	"ok.esg: record 1: saliency: the model's output has [0-9]+ non-finite values? \(NaN or Inf\)" \
	esg-attr -m log.pt --method saliency --target 0 -o out.esg ok.esg
expect_fail "esg-attr: the model's output is NaN (perturbation method)" 1 \
	"ok.esg: record 1: feature_ablation: the model's output has [0-9]+ non-finite values? \(NaN or Inf\)" \
	esg-attr -m log.pt --method feature_ablation --target 0 -o out.esg ok.esg
check "a finite output of the same model passes" esg-attr -m log.pt --method saliency --target 0 -o posattr.esg pos.esg
check "--allow-nonfinite: a NaN model output goes through" \
	esg-attr -m log.pt --method saliency --target 0 --allow-nonfinite -o nanout.esg neg.esg

# the map: finite input and scores, an infinite gradient at 0
expect_fail "esg-attr: a non-finite map is not written" 1 \
	"zero.esg: record 1: the result 'attribution' has 1 non-finite value \(NaN or Inf\) of 64; nothing written" \
	esg-attr -m sqrt.pt --method saliency --target 0 -o out.esg zero.esg
no_file "no map left" out.esg

# esg-metric reads every tensor of a record; esg-wrap its --input
expect_fail "esg-metric: NaN in a map" 1 "allowed.esg: record 1: tensor '(image|attribution)' has [0-9]+ non-finite" \
	esg-metric -m lin.pt --metric deletion -o m.tsv allowed.esg
no_file "esg-metric: no table left" m.tsv
$PYTHON -c "
import numpy as np
np.save('vol.npy', np.ones((8, 8, 8), np.float32)); v = np.ones((8, 8, 8), np.float32); v[1, 2, 3] = np.nan
np.save('volnan.npy', v)"
esg-load volnan.npy -o volnan.esg
expect_fail "esg-wrap: NaN in --input" 1 "volnan.esg: record 1: tensor 'image' has 1 non-finite value" \
	esg-wrap -m seg.pt --reduce fixed-mask --input volnan.esg -o w.pt
no_file "esg-wrap: no model left" w.pt
for t in esg-attr esg-metric esg-wrap esg-randomise; do
	$t --help | grep -q -- "--allow-nonfinite" && ok "$t --help names --allow-nonfinite" || not_ok "$t --help"
done

# A fixed-mask score over 163 x 480 x 640 = 50 M voxels of ~1: ablating the
# single corner voxel (grid blocks 162,479,639 leave a 1-voxel block there)
# changes the score by that voxel's value.  A float32 sum rounds the change
# to a multiple of 4 (or 0); the float64 sum keeps it within 1e-4.
$PYTHON -c "
import numpy as np
v = np.random.default_rng(1).uniform(0.5, 1.5, (163, 480, 640)).astype(np.float32)
np.save('big.npy', v)
print(repr(float(v[-1, -1, -1])))" >corner.txt
esg-load big.npy -o big.esg && esg-wrap -m seg.pt --reduce fixed-mask --input big.esg -o bigw.pt ||
	not_ok "50 M voxels: load and wrap"
rm -f big.npy
check "50 M voxels: feature ablation runs" esg-attr -m bigw.pt --method feature_ablation --target 1 --threads 2 \
	--internal-batch 1 --param feature_mask=grid:162,479,639 -o bigattr.esg big.esg
$PYTHON - "$ESG_ROOT/tests/py" <<'PY' >.corner 2>&1 && ok "50 M voxels: the 1-voxel ablation equals the voxel's value within 1e-4" || not_ok "50 M voxels: $(cat .corner)"
import sys
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
want = float(open("corner.txt").read())
meta, ts = st.read_stream("bigattr.esg")[0]
a = {t[0]: t[3] for t in ts}["attribution"]
got = float(a[0, 0, -1, -1, -1])
print("corner voxel", want, "ablation", got)
assert abs(got - want) <= 1e-4 * abs(want), (got, want)
PY
rm -f big.esg bigattr.esg bigw.pt
done_testing
