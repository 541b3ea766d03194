#!/usr/bin/env bash
# needs: torch
# esg-randomise: cascading / independent parameter randomisation.  Every step
# model loads in Python and differs from the original exactly in the
# parameters its manifest lists (tests/py/ref_metric.py randomise); the top
# layer is the one nearest the output in execution order (not registration
# order); default bounds equal torch's kaiming fan-in bounds; reproducible by
# seed; errors leave no manifest behind.
. "$(dirname "$0")/lib.sh"

REF="$PYTHON $ESG_ROOT/tests/py/ref_metric.py"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }

# a model whose registration order is the reverse of its execution order
cat >rev.py <<'PY'
import sys, torch, torch.nn as nn
class Rev(nn.Module):
    def __init__(self):
        super().__init__()
        self.last = nn.Linear(3, 2)    # registered first, runs last
        self.norm = nn.BatchNorm1d(3)
        self.first = nn.Linear(4, 3)
    def forward(self, x):
        return self.last(torch.relu(self.norm(self.first(x))))
torch.manual_seed(0)
m = Rev().eval()
with torch.no_grad():
    m.norm.weight.uniform_(0.5, 1.5)
    m.norm.bias.uniform_(-0.5, 0.5)
torch.jit.script(m).save(sys.argv[1] + "_script.pt")
torch.jit.trace(m, torch.randn(2, 4)).save(sys.argv[1] + "_trace.pt")
PY
$PYTHON rev.py rev || { not_ok "rev fixture"; done_testing; }

for how in script trace; do
	check "cascading on rev_$how" esg-randomise -m rev_$how.pt --mode cascading -o c_$how
	check "rev_$how: steps differ exactly in the listed parameters" $REF randomise rev_$how.pt c_$how
	check "rev_$how: execution order first, norm, last; top layer first" $PYTHON -c '
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
assert m["layers"] == ["first", "norm", "last"], m["layers"]
assert [s["layer"] for s in m["steps"]] == ["last", "norm", "first"]
assert [s["file"] for s in m["steps"]] == ["step-01-last.pt", "step-02-norm.pt", "step-03-first.pt"]
assert [len(s["parameters"]) for s in m["steps"]] == [2, 4, 6]        # cumulative
p = {q["name"]: q for q in m["steps"][2]["parameters"]}
assert p["norm.weight"]["init"] == "ones" and p["norm.bias"]["init"] == "zeros"
assert abs(p["first.weight"]["high"] - 0.5) < 1e-12 and abs(p["first.bias"]["low"] + 0.5) < 1e-12  # 1/sqrt(4)
' c_$how
done
check "the traced and scripted models get the same random values (seeded by name)" $PYTHON -c '
import torch
a = dict(torch.jit.load("c_script/step-03-first.pt").named_parameters())
b = dict(torch.jit.load("c_trace/step-03-first.pt").named_parameters())
assert all(torch.equal(a[k], b[k]) for k in a)'

check "independent on the fixture U-Net (traced)" esg-randomise -m fx/unet_trace.pt --mode independent -o ind
check "independent: each step differs in its own layer only" $REF randomise fx/unet_trace.pt ind
check "independent: 23 steps, one layer each, top first" $PYTHON -c '
import json
m = json.load(open("ind/manifest.json"))
assert len(m["steps"]) == 23 and m["steps"][0]["layer"] == "unet.head", m["steps"][0]["layer"]
assert all(s["randomised_layers"] == [s["layer"]] for s in m["steps"])
assert m["steps"][-1]["layer"] == "unet.enc1.conv1"'
check "gaussian init, --layers groups" esg-randomise -m fx/unet_script.pt --mode cascading --init gaussian \
	--layers unet.enc1,unet.head --seed 7 -o g
check "gaussian: listed parameters differ, the rest identical" $REF randomise fx/unet_script.pt g
check "--layers: two steps, head then enc1 (all its parameters)" $PYTHON -c '
import json
m = json.load(open("g/manifest.json"))
assert [s["layer"] for s in m["steps"]] == ["unet.head", "unet.enc1"]
assert len(m["steps"][1]["parameters"]) == 2 + 6   # head (w, b) + 2 bias-free convs + 2 norms (w, b)
assert all(p["init"] == "normal(mean, std)" for p in m["steps"][1]["parameters"])'
check "uniform init: U(mean - std, mean + std) bounds" sh -c "esg-randomise -m rev_script.pt --mode independent --init uniform -o u && $REF randomise rev_script.pt u"

# reproducible by seed
check "same seed twice" sh -c 'esg-randomise -m rev_script.pt --mode cascading --seed 5 -o s1 && esg-randomise -m rev_script.pt --mode cascading --seed 5 -o s2 && esg-randomise -m rev_script.pt --mode cascading --seed 6 -o s3'
check "same seed: same values; another seed: other values" $PYTHON -c '
import torch
p = lambda d: dict(torch.jit.load(d + "/step-03-first.pt").named_parameters())
a, b, c = p("s1"), p("s2"), p("s3")
assert all(torch.equal(a[k], b[k]) for k in a)
assert not torch.equal(a["first.weight"], c["first.weight"])'
check "randomised model still runs" $PYTHON -c '
import torch
m = torch.jit.load("s1/step-01-last.pt"); assert m(torch.randn(3, 4)).shape == (3, 2)'

# errors
expect_fail "no --mode is a usage error" 2 "no mode" esg-randomise -m rev_script.pt -o e1
no_file "usage error: no directory" e1
expect_fail "bad --mode" 2 "mode: 'sideways'" esg-randomise -m rev_script.pt --mode sideways -o e1
expect_fail "not a model" 1 "not_a_model.pt" esg-randomise -m fx/not_a_model.pt --mode cascading -o e2
no_file "no output after a bad model" e2/manifest.json
expect_fail "unknown --layers name" 1 "no module or parameter 'nope'" esg-randomise -m rev_script.pt --mode cascading --layers nope -o e3
no_file "no output after a bad --layers" e3/manifest.json
touch afile
expect_fail "-o names a file" 1 "not a directory" esg-randomise -m rev_script.pt --mode cascading -o afile
check "--help" esg-randomise --help
done_testing
