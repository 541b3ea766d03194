#!/usr/bin/env bash
# needs: torch
# CUDA against the CPU, on the shipped models and data: the same command with
# --device cuda:0 and --device cpu, maps compared as max|a-b| / max|b|
# (tests/py/amp_diff.py's max_rel).  Skipped (one "# SKIP" line) unless the
# tools were built against a CUDA libtorch (make TORCH_PREFIX=...) and a GPU
# is visible.  ESG_CUDA_DEVICE picks the device (default cuda:0;
# ESG_CUDA_DEVICE=cpu runs the whole script CPU against CPU, a check of the
# script itself).  Timings (esg.seconds, the method's own wall time) are
# printed as "# time" lines.
#
# Tolerances, from what an H100 gave (doc/methods.md "CUDA"): in float32
# (no TF32: the shim turns it off) the bulk of every map agrees closely
# (sig_median, the median |a-b|/|b| over elements above 1 % of max|b|:
# <= 1e-3, measured <= 3e-4), but maps that gate the gradient on the
# forward pass's ReLU signs (saliency, integrated gradients, guided
# backprop, ...) differ at a few voxels by up to ~10 % of their maximum
# (max_rel <= 0.15, measured 0.024-0.104): ReLU inputs near zero fall on
# the other side on the other device.  The others max_rel <= 1e-2
# (measured <= 8.5e-4; layer integrated gradients 5e-2, measured 7.2e-3).
# --amp (fp16) against float32 on the CPU: max_rel <= 0.1, median <= 0.01
# (as tests/cli/amp.sh for bf16; measured <= 0.076).  Metrics:
# deletion within 1e-3 relative (measured 1e-5); infidelity and
# max-sensitivity, which difference nearby outputs of a score summed over
# 10^5 voxels, within 25 % (measured 14 % and 1.3 %).  Wrapping on the GPU
# must give the same fixed mask (maps with the two wrapped models on the
# CPU are identical), and esg-randomise the same parameters.
. "$(dirname "$0")/lib.sh"
DEV=${ESG_CUDA_DEVICE:-cuda:0}
S=$ESG_ROOT/share
DIFF="$PYTHON $ESG_ROOT/tests/py/amp_diff.py"
meta() { esg-render --info "$1" | awk -v k="$2:" '$1 == k { print $2 }'; }

esg-load --normalise zscore "$S/data/angio2d_20001_aneurysm.png" -o angio.st.zst || not_ok "esg-load angio"
esg-load --normalise zscore "$S/data/phantom1000_image.nii.gz" -o phantom.st.zst || not_ok "esg-load phantom"

# Is there a device?  (A CPU-only libtorch, or no GPU: skip everything.)
if ! esg-attr -m "$S/models/classifier2d.pt" --device "$DEV" --method saliency --target 1 \
	-o probe.st.zst angio.st.zst 2>probe.err; then
	if grep -qE "no CUDA support or no GPU is visible|only [0-9]+ GPU" probe.err; then
		skip "no CUDA device ($(head -c 200 probe.err))"
		done_testing
	fi
	not_ok "probe on $DEV: $(head -c 300 probe.err)"
	done_testing
fi
ok "saliency on $DEV runs (classifier2d)"

# rel NAME A B MAX [MEDIAN [SIGMED]]: max_rel of A against B within MAX,
# median_rel within MEDIAN (default 1), sig_median within SIGMED (1e-3)
rel() {
	local name=$1 a=$2 b=$3 max=$4 med=${5:-1} sig=${6:-1e-3} d
	if ! d=$($DIFF "$a" "$b" 2>&1); then not_ok "$name: compare ($d)"; return; fi
	echo "$d" | tr ' ' '\n' | awk -F= -v max="$max" -v med="$med" -v sig="$sig" '{ v[$1] = $2 } END {
		exit !(v["max_rel"] <= max && v["median_rel"] <= med && v["sig_median"] <= sig) }' &&
		ok "$name: $DEV vs cpu within $max ($d)" || not_ok "$name: $DEV vs cpu within $max ($d)"
}
timing() { echo "# time $1: cpu $(meta "$2" esg.seconds) s, $DEV $(meta "$3" esg.seconds) s"; }

# both NAME TOL MODEL INPUT ARGS...: esg-attr on cpu and on $DEV, compared
both() {
	local name=$1 tol=$2 model=$3 in=$4; shift 4
	if esg-attr -m "$model" --device cpu "$@" -o "c-$name.st.zst" "$in" 2>err &&
		esg-attr -m "$model" --device "$DEV" "$@" -o "g-$name.st.zst" "$in" 2>>err; then
		rel "$name" "g-$name.st.zst" "c-$name.st.zst" "$tol"
		timing "$name" "c-$name.st.zst" "g-$name.st.zst"
	else
		not_ok "$name runs on cpu and $DEV ($(head -c 300 err))"
	fi
}

# esg-wrap: the fixed mask predicted on the device is the CPU's (maps with
# the two wrapped models, both run on the CPU, are identical), and a model
# wrapped on the device loads on the CPU (saved from the CPU)
U=$S/models/unet3d.pt
check "esg-wrap --device cpu" esg-wrap -m "$U" --reduce fixed-mask --input phantom.st.zst -o w-cpu.pt
check "esg-wrap --device $DEV" esg-wrap -m "$U" --device "$DEV" --reduce fixed-mask --input phantom.st.zst -o w-dev.pt
check "esg-wrap --device $DEV --patch 48,48,48" esg-wrap -m "$U" --device "$DEV" --reduce fixed-mask \
	--input phantom.st.zst --patch 48,48,48 -o w-devp.pt
check "... the same mask as on the cpu (identical maps on the cpu)" sh -c \
	"esg-attr -m w-cpu.pt --method saliency --target 1 -o wc.st.zst phantom.st.zst &&
	 esg-attr -m w-dev.pt --method saliency --target 1 -o wd.st.zst phantom.st.zst &&
	 esg-compare --tensor attribution wc.st.zst wd.st.zst"
W=w-cpu.pt
# --reduce otsu and argmax compute their masks at every forward: on the device
check "esg-wrap --reduce otsu" esg-wrap -m "$U" --reduce otsu -o w-otsu.pt
check "esg-wrap --reduce argmax" esg-wrap -m "$U" --reduce argmax -o w-argmax.pt

both saliency 0.15 $W phantom.st.zst --method saliency --target 1
both integrated_gradients 0.15 $W phantom.st.zst --method integrated_gradients --param n_steps=8 --target 1
both noise_tunnel 0.15 $W phantom.st.zst --method noise_tunnel --param base=saliency --param nt_samples=4 --target 1
both guided_backprop 0.15 $W phantom.st.zst --method guided_backprop --target 1
both deconvolution 1e-2 $W phantom.st.zst --method deconvolution --target 1
both deeplift 1e-2 $W phantom.st.zst --method deeplift --target 1
both excitation_backprop 1e-2 $W phantom.st.zst --method excitation_backprop --target 1
both layer_gradcam 1e-2 $W phantom.st.zst --method layer_gradcam --layer model.dec2 --target 1
both guided_gradcam 1e-2 $W phantom.st.zst --method guided_gradcam --layer model.dec2 --target 1
both layer_guided_backprop 0.15 $W phantom.st.zst --method layer_guided_backprop --layer model.dec2 --target 1
both layer_integrated_gradients 5e-2 $W phantom.st.zst --method layer_integrated_gradients --layer model.dec2 \
	--param n_steps=8 --target 1
both layer_deeplift 1e-2 $W phantom.st.zst --method layer_deeplift --layer model.dec2 --target 1
both gradient_shap 0.15 $W phantom.st.zst --method gradient_shap --param n_samples=4 --target 1
both feature_ablation 1e-2 $W phantom.st.zst --method feature_ablation --param feature_mask=grid:16 --target 1
both patch_saliency 0.15 $W phantom.st.zst --method saliency --target 1 --patch 48,48,48 --overlap 0.25
both otsu_saliency 0.15 w-otsu.pt phantom.st.zst --method saliency --target 1
both argmax_saliency 0.15 w-argmax.pt phantom.st.zst --method saliency --target 1
both occlusion 1e-2 "$S/models/classifier2d.pt" angio.st.zst --method occlusion \
	--param sliding_window_shapes=1,8,8 --param strides=1,4,4 --target 1
both classifier_ig 1e-2 "$S/models/classifier2d.pt" angio.st.zst --method integrated_gradients --target 1

# --amp: fp16 on CUDA (bf16 on the CPU) against float32 on the CPU
for m in saliency "integrated_gradients --param n_steps=8" guided_backprop "layer_gradcam --layer model.dec2"; do
	n=amp_${m%% *}
	if esg-attr -m $W --device "$DEV" --amp --method $m --target 1 -o "g-$n.st.zst" phantom.st.zst 2>err; then
		# fp16 (CUDA): 0.1; bf16 (ESG_CUDA_DEVICE=cpu; 3 bits less): 0.25
		tol=0.1; [ "$(meta "g-$n.st.zst" esg.amp)" = fp16 ] || tol=0.25
		rel "$n (--amp $(meta "g-$n.st.zst" esg.amp))" "g-$n.st.zst" "c-${m%% *}.st.zst" $tol 0.01 1
		echo "# time $n: $DEV --amp $(meta "g-$n.st.zst" esg.seconds) s"
	else
		not_ok "$n runs ($(head -c 300 err))"
	fi
done
case "$DEV" in cuda*)
	check "--amp on $DEV is fp16" test "$(meta g-amp_saliency.st.zst esg.amp)" = fp16 ;;
esac

# esg-metric on the device: the same scores (infidelity and max-sensitivity
# perturb with esegeta's own generator, the same on every device; their
# tolerance is the float32 conditioning of the metric, see above)
M="--metric infidelity,max_sensitivity,deletion --param n_perturb_samples=4"
if esg-metric -m $W --device cpu $M -o mc.tsv c-saliency.st.zst 2>err &&
	esg-metric -m $W --device "$DEV" $M -o mg.tsv c-saliency.st.zst 2>>err; then
	for mt in infidelity:0.25 max_sensitivity:0.25 deletion:1e-3; do
		metric=${mt%:*} tol=${mt#*:}
		a=$(awk -F'\t' -v k=$metric '$7 == k { print $8 }' mg.tsv)
		b=$(awk -F'\t' -v k=$metric '$7 == k { print $8 }' mc.tsv)
		awk -v a="$a" -v b="$b" -v t="$tol" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b;
			exit !(a != "" && d <= t * m + 1e-12) }' &&
			ok "esg-metric $metric: $DEV $a, cpu $b (within $tol)" ||
			not_ok "esg-metric $metric: $DEV $a, cpu $b (within $tol)"
	done
else
	not_ok "esg-metric on cpu and $DEV ($(head -c 300 err))"
fi

# esg-randomise on the device: the same randomised parameters, saved from
# the CPU (maps with both step-01 models on the CPU are identical)
if esg-randomise -m $W --device cpu --mode cascading --seed 1 -o rc >/dev/null 2>err &&
	esg-randomise -m $W --device "$DEV" --mode cascading --seed 1 -o rg >/dev/null 2>>err; then
	f=$(cd rc && ls step-01-*.pt | head -1)
	check "esg-randomise on $DEV: the cpu's parameters ($f)" sh -c \
		"esg-attr -m rc/$f --method saliency --target 1 -o rc.st.zst phantom.st.zst &&
		 esg-attr -m rg/$f --method saliency --target 1 -o rg.st.zst phantom.st.zst &&
		 esg-compare --tensor attribution rc.st.zst rg.st.zst"
else
	not_ok "esg-randomise on cpu and $DEV ($(head -c 300 err))"
fi

# A device that isn't there: one line, exit 1, no output
one_line() { [ "$(wc -l <"$T/.err")" = 1 ]; }
for tool in "esg-attr -m $W --method saliency --target 1 -o nx.st.zst phantom.st.zst" \
	"esg-metric -m $W --metric infidelity c-saliency.st.zst" \
	"esg-randomise -m $W --mode cascading -o nx" \
	"esg-wrap -m $U --reduce fixed-mask --input phantom.st.zst -o nx.pt"; do
	expect_fail "${tool%% *} --device cuda:99: one error line" 1 \
		"^${tool%% *}: .*(cuda:99.*only [0-9]+ GPU|no CUDA support)" $tool --device cuda:99
	one_line || not_ok "... stderr is one line: $(head -c 400 "$T/.err")"
done
expect_fail "esg-attr --device tpu:0: one error line" 1 "bad device 'tpu:0'" \
	esg-attr -m $W --method saliency --target 1 -o nx.st.zst --device tpu:0 phantom.st.zst
no_file "no output left" nx.st.zst nx.pt nx
done_testing
