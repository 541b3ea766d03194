#!/usr/bin/env bash
# needs: torch
# esg-attr --amp: forward passes under libtorch's CPU autocast in bf16,
# float32 inputs, input gradients, scores and sums.  On the fixture U-Net
# (3D, conv-BN-ReLU blocks, fixed-mask scores) the maps stay within a bf16
# tolerance of the float32 maps -- every element within 10 % of max|map|,
# the median within 1 % (tests/py/amp_diff.py; measured: 0.5-6 % and
# 0.03-0.5 %) -- and differ from them (the forward really ran in bf16).
# A traced ConvTranspose3d runs under autocast too (within 25 %: a tiny net).
# The DeepLift and excitation rules are refused, fp16 on the CPU too.
. "$(dirname "$0")/lib.sh"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PYTHON "$ESG_ROOT/tests/py/ref_attr.py" inputs fx in >/dev/null || { not_ok "input streams"; done_testing; }
$PYTHON -c "import numpy as np; np.save('xu.npy', np.fromfile('fx/xu.f32', np.float32).reshape(2, 1, 8, 8, 8)[0, 0])"
esg-load xu.npy -o xu.st.zst || not_ok "esg-load xu.npy"
DIFF="$PYTHON $ESG_ROOT/tests/py/amp_diff.py"
A="esg-attr --threads 2 -m fx/unet_script.pt --target 1"
meta() { esg-render --info "$1" | awk -v k="$2:" '$1 == k { print $2 }'; }

# within DIFFLINE [MAX]: max_rel in (0, MAX (default 0.1)], median_rel <= 0.01
within() {
	echo "$1" | tr ' ' '\n' | awk -F= -v max="${2:-0.1}" '{ v[$1] = $2 } END {
		exit !(v["max_rel"] > 0 && v["max_rel"] <= max && v["median_rel"] <= 0.01) }'
}
i=0
for m in saliency "integrated_gradients --param n_steps=16" guided_backprop deconvolution \
	"noise_tunnel --param base=saliency --param nt_samples=4" "layer_gradcam --layer unet.enc2"; do
	i=$((i + 1))
	if $A --method $m -o f$i.st.zst xu.st.zst 2>err && $A --method $m --amp -o a$i.st.zst xu.st.zst 2>>err; then
		d=$($DIFF a$i.st.zst f$i.st.zst)
		within "$d" && ok "--amp ${m%% *}: close to float32 and not equal ($d)" ||
			not_ok "--amp ${m%% *}: close to float32 and not equal ($d)"
		[ "$(meta a$i.st.zst esg.amp)" = bf16 ] && ok "... esg.amp = bf16" || not_ok "... esg.amp = bf16"
	else
		not_ok "--amp ${m%% *} runs ($(head -c 300 err))"
	fi
done
[ -z "$(meta f1.st.zst esg.amp)" ] && ok "without --amp: no esg.amp" || not_ok "without --amp: no esg.amp"
check "--amp-dtype bf16 is --amp on the CPU" sh -c \
	"$A --method saliency --amp-dtype bf16 -o b1.st.zst xu.st.zst && esg-compare --tensor attribution b1.st.zst a1.st.zst"

# A traced ConvTranspose3d (aten::_convolution, transposed): libtorch 1.13's
# CPU autocast runs it as a plain convolution and fails unless the shim
# rewrites it (as the shipped U-Net's decoder needs)
cat >tconv.py <<'PY'
import torch
class Up(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.down = torch.nn.Conv3d(1, 8, 2, stride=2)
        self.up = torch.nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.head = torch.nn.Conv3d(4, 2, 1)
    def forward(self, x):
        return self.head(torch.relu(self.up(torch.relu(self.down(x))))).sum(dim=(2, 3, 4))
torch.manual_seed(3)
torch.jit.trace(Up().eval(), torch.randn(1, 1, 8, 8, 8)).save("tconv.pt")
PY
$PYTHON tconv.py || not_ok "traced ConvTranspose3d fixture"
for m in saliency guided_backprop "layer_guided_backprop --layer up" "layer_gradcam --layer up"; do
	if esg-attr --threads 2 -m tconv.pt --target 0 --method $m -o tf.st.zst xu.st.zst 2>err &&
		esg-attr --threads 2 -m tconv.pt --target 0 --method $m --amp -o ta.st.zst xu.st.zst 2>>err; then
		d=$($DIFF ta.st.zst tf.st.zst)
		# a tiny random net: ReLU gates near 0 flip, so single elements move more
		within "$d" 0.25 && ok "traced ConvTranspose3d, --amp ${m%% *}: close to float32 ($d)" ||
			not_ok "traced ConvTranspose3d, --amp ${m%% *}: close to float32 ($d)"
	else
		not_ok "traced ConvTranspose3d, --amp ${m%% *} runs ($(head -c 300 err))"
	fi
done

# forward-only methods run under autocast too (their accuracy: doc/methods.md)
check "--amp occlusion runs" $A --method occlusion --param sliding_window_shapes=1,4,4,4 --amp -o o.st.zst xu.st.zst
[ "$(meta o.st.zst esg.amp)" = bf16 ] && ok "... esg.amp = bf16" || not_ok "... esg.amp = bf16"
check "--amp feature_ablation on a 2D segmentation model wrapped with --reduce otsu" sh -c \
	"esg-wrap --threads 1 -m fx/seg.pt --reduce otsu --input in/seg.st.zst -o otsu.pt &&
	 esg-attr --threads 1 -m otsu.pt --method feature_ablation --target 1 --amp -o fa.st.zst in/seg.st.zst"

# refused: rules whose backward divides small differences; fp16 on the CPU
for m in deeplift "deeplift_shap" "layer_deeplift --layer unet.enc2" excitation_backprop \
	contrastive_excitation_backprop "noise_tunnel --param base=deeplift --param nt_samples=2"; do
	expect_fail "--amp ${m%% *}: refused" 1 "^esg-attr: error: .*mixed precision \(--amp\) is not supported with the .* rule" \
		$A --method $m --amp -o r.st.zst xu.st.zst
	[ "$(grep -c . "$T/.err")" = 1 ] && ok "... in one line" || not_ok "... in one line ($(cat "$T/.err"))"
done
no_file "... leaving no output" r.st.zst
expect_fail "--amp-dtype fp16 on the CPU: usage error" 2 "^esg-attr: error: --amp: .*fp16 needs a CUDA device" \
	$A --method saliency --amp-dtype fp16 -o r.st.zst xu.st.zst
expect_fail "--amp-dtype fp32: usage error" 2 "^esg-attr: error: --amp-dtype: 'fp32' is not bf16 or fp16" \
	$A --method saliency --amp-dtype fp32 -o r.st.zst xu.st.zst
# esg-metric: its model passes under --amp too (recorded), a warning otherwise
check "esg-metric --amp: max_sensitivity and deletion" sh -c \
	"esg-metric --threads 2 -m fx/unet_script.pt --amp --metric max_sensitivity,deletion -o m.tsv a1.st.zst 2>merr"
[ "$(awk -F'\t' 'NR > 1 && $9 ~ /^\{"amp":"bf16",/' m.tsv | wc -l)" = 2 ] && ok "... metric_params record amp" ||
	not_ok "... metric_params record amp ($(cat m.tsv))"
[ ! -s merr ] && ok "... no warning" || not_ok "... no warning ($(cat merr))"
check "esg-metric without --amp on --amp maps" sh -c \
	"esg-metric --threads 2 -m fx/unet_script.pt --metric infidelity -o m2.tsv a1.st.zst 2>merr"
grep -q "warning: a1.st.zst: record 1 was made with --amp (bf16); the model passes here run in float32" merr &&
	ok "... warns that its passes run in float32" || not_ok "... warns that its passes run in float32 ($(cat merr))"
expect_fail "esg-metric --amp without a model metric: usage error" 2 "^esg-metric: error: --amp: none of the metrics" \
	esg-metric --amp --metric spearman a1.st.zst f1.st.zst
esg-attr --help | grep -q -- "--amp-dtype" && ok "esg-attr --help documents --amp" || not_ok "esg-attr --help documents --amp"
done_testing
