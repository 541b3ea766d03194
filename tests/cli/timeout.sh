#!/usr/bin/env bash
# needs: torch
# --timeout SECONDS (every tool, tools/cli.c): a run that takes longer stops
# at once, prints one line, exits 124 and leaves no output -- an older file
# of the same name (or an output directory's contents) stays as it was.
# Invalid values are usage errors; a run that finishes in time is unchanged.
. "$(dirname "$0")/lib.sh"

# A model whose forward takes seconds (k rounds through 8 Linear(512, 512)),
# one giving per-class scores [N, 2], one a segmentation-like map
# [N, 2, 16, 32], and a fast one (k = 1) of the same shape.
cat >slow.py <<'PY'
import torch, numpy as np
class Slow(torch.nn.Module):
    def __init__(self, k: int, seg: bool):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(512, 512) for _ in range(8)])
        self.k = k
        self.seg = seg
    def forward(self, x):
        h = x.flatten(1)
        for _ in range(self.k):
            for l in self.layers:
                h = torch.tanh(l(h))
        if self.seg:
            return torch.stack([h, -h], 1).reshape(x.shape[0], 2, 16, 32)
        return torch.stack([h.sum(1), -h.sum(1)], 1)
torch.manual_seed(0)
for name, k, seg in [("slow", 4000, False), ("slowseg", 4000, True), ("fast", 1, False)]:
    torch.jit.script(Slow(k, seg).eval()).save(name + ".pt")
# for esg-randomise: slow to randomise and save (8 x 4 MB), and tiny
class Layers(torch.nn.Module):
    def __init__(self, n: int, width: int):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(width, width) for _ in range(n)])
    def forward(self, x):
        for l in self.layers:
            x = l(x)
        return x
torch.jit.script(Layers(8, 1024).eval()).save("big.pt")
torch.jit.script(Layers(3, 4).eval()).save("tiny.pt")
np.save("img.npy", np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32))
PY
# (torch.jit.script reads the class's source: a file, not stdin)
$PYTHON slow.py || { not_ok "slow fixture models"; done_testing; }
esg-load img.npy -o img.st.zst || not_ok "esg-load img.npy"

now() { date +%s%N; }
# timed_out DESC CMD...: CMD (--timeout 0.3) exits 124 within LIMIT s, one error line
LIMIT=6
timed_out() {
	local d=$1; shift
	local t0 rc dt
	t0=$(now)
	"$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	dt=$((($(now) - t0) / 1000000))
	# one error line (a warning about the input may come before it)
	if [ $rc = 124 ] && [ "$(grep -c ': error: ' "$T/.err")" = 1 ] &&
		grep -qE "^$1: error: timed out after 0\.3 s \(--timeout\)$" "$T/.err" && [ $dt -lt $((LIMIT * 1000)) ]; then
		ok "$d: exit 124 after $dt ms, one line"
	else
		not_ok "$d (exit $rc after $dt ms; stderr: $(head -c 300 "$T/.err"))"
	fi
}

mkdir out
echo "an older output" >out/a.st.zst
cp out/a.st.zst old
timed_out "esg-attr, slow integrated gradients" esg-attr --threads 1 --timeout 0.3 -m slow.pt \
	--method integrated_gradients --param n_steps=64 --target 0 -o out/a.st.zst img.st.zst
cmp -s out/a.st.zst old && [ "$(ls -A out)" = a.st.zst ] && ok "... the older output is intact, nothing else" ||
	not_ok "... the older output is intact, nothing else ($(ls -A out))"
timed_out "esg-attr, a new output" esg-attr --threads 2 --timeout 0.3 -m slow.pt \
	--method occlusion --param sliding_window_shapes=1,4,4 --target 0 -o out/new.st.zst img.st.zst
no_file "... leaves no file" out/new.st.zst
[ "$(ls -A out)" = a.st.zst ] && ok "... nor a temporary one" || not_ok "... nor a temporary one ($(ls -A out))"

# a run that finishes well within its timeout is unaffected
check "esg-attr finishing in time: exit 0" esg-attr --threads 1 --timeout 120 -m fast.pt \
	--method saliency --target 0 -o sal.st.zst img.st.zst
check "... the same map as without --timeout" sh -c \
	"esg-attr --threads 1 -m fast.pt --method saliency --target 0 -o sal0.st.zst img.st.zst &&
	 esg-compare --tensor attribution sal.st.zst sal0.st.zst"
check "--timeout 0 means none" esg-attr --threads 1 --timeout 0 -m fast.pt \
	--method saliency --target 0 -o sal1.st.zst img.st.zst

echo "an older table" >out/m.tsv
cp out/m.tsv oldm
timed_out "esg-metric, max-sensitivity on a slow model" esg-metric --threads 1 --timeout 0.3 -m slow.pt \
	--metric max_sensitivity -o out/m.tsv sal.st.zst
cmp -s out/m.tsv oldm && ok "... the older table is intact" || not_ok "... the older table is intact"
check "esg-metric finishing in time" esg-metric --threads 1 --timeout 120 -m fast.pt \
	--metric infidelity -o m.tsv sal.st.zst

echo "an older model" >out/w.pt
cp out/w.pt oldw
timed_out "esg-wrap, fixed mask from a slow forward" esg-wrap --threads 1 --timeout 0.3 -m slowseg.pt \
	--reduce fixed-mask --input img.st.zst -o out/w.pt
cmp -s out/w.pt oldw && ok "... the older .pt is intact" || not_ok "... the older .pt is intact"
timed_out "esg-wrap, a new .pt" esg-wrap --threads 1 --timeout 0.3 -m slowseg.pt \
	--reduce fixed-mask --input img.st.zst -o out/w2.pt
[ "$(ls -A out | sort | tr '\n' ' ')" = "a.st.zst m.tsv w.pt " ] && ok "... nothing else left" ||
	not_ok "... nothing else left ($(ls -A out))"

# esg-randomise: step files and manifest appear together or not at all.
mkdir rd
echo "older step" >rd/step-01-layers.7.pt
echo "older manifest" >rd/manifest.json
echo "unrelated" >rd/notes.txt
(cd rd && md5sum * >../rd.md5)
timed_out "esg-randomise into an existing directory" esg-randomise --timeout 0.3 -m big.pt \
	--mode cascading -o rd
(cd rd && md5sum -c --quiet ../rd.md5) && [ "$(ls -A rd | wc -l)" = 3 ] &&
	ok "... its contents are what they were" || not_ok "... its contents are what they were ($(ls -A rd))"
timed_out "esg-randomise into a new directory" esg-randomise --timeout 0.3 -m big.pt --mode independent -o rnew
no_file "... which is removed again" rnew
check "esg-randomise finishing in time" esg-randomise --timeout 120 -m tiny.pt --mode cascading -o rok
[ -f rok/manifest.json ] && [ "$(ls rok | wc -l)" = 4 ] && ok "... writes its 3 steps and manifest" ||
	not_ok "... writes its 3 steps and manifest ($(ls rok))"

# invalid values: usage errors, for every tool
for t in esg-attr esg-metric esg-wrap esg-randomise esg-load esg-render esg-compare; do
	expect_fail "$t --timeout -1: usage error" 2 "^$t: error: --timeout: '-1'" "$t" --timeout -1
	expect_fail "$t --timeout abc: usage error" 2 "^$t: error: --timeout: 'abc'" "$t" --timeout abc
	"$t" --help | grep -q -- "--timeout SECONDS" && "$t" --help | grep -q "124" &&
		ok "$t --help documents --timeout and exit 124" || not_ok "$t --help documents --timeout and exit 124"
done
check "esg-load finishing in time" esg-load --timeout 30 img.npy -o l.st.zst
check "esg-compare finishing in time" esg-compare --timeout 30 l.st.zst img.st.zst
done_testing
