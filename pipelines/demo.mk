# demo.mk - the demo pipeline: a real brain volume and a synthetic TOF-MRA
# phantom through esg-load, esg-wrap, esg-attr and esg-render.
# Run through `make demo` (builds the tools first); re-running redoes only
# what changed.  Results land in $(OUT).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
.SECONDARY:
MAKEFLAGS += --no-builtin-rules

BUILD ?= build
OUT ?= demo-out
BIN := $(BUILD)/bin
THREADS ?= 2
BRAIN := /usr/share/mricron/templates/ch2.nii.gz
PHANTOM := share/data/phantom1000_image.nii.gz
VESSELS := share/data/phantom1000_vessels.nii.gz
UNET := share/models/unet3d.pt
# Gradient methods and their parameters (kept small: the demo runs in about a minute).
METHODS := saliency input_x_gradient integrated_gradients smoothgrad guided_backprop \
	deconvolution deeplift gradient_shap
PARAMS_integrated_gradients := --param n_steps=16
PARAMS_smoothgrad := --param nt_samples=4 --param stdevs=0.2
PARAMS_gradient_shap := --param n_samples=8 --baseline blur:2 --baseline zero

ATTR := $(foreach m,$(METHODS),$(OUT)/phantom/$(m).st.zst)
PICTURES := $(OUT)/brain/axial.png $(OUT)/brain/mosaic.png $(OUT)/brain/brain.nii.gz \
	$(OUT)/phantom/image-mip.png $(OUT)/phantom/image.nii.gz \
	$(ATTR:.st.zst=-mip.png) $(ATTR:.st.zst=.nii.gz)

all: $(PICTURES)
	@echo
	@echo "demo: results in $(OUT)/"
	@echo "  brain:   $(OUT)/brain/axial.png, mosaic.png, brain.nii.gz (Colin27 T1, z-scored)"
	@echo "  phantom: $(OUT)/phantom/image-mip.png and, per method, METHOD-mip.png (overlay,"
	@echo "           maximum-intensity projection) and METHOD.nii.gz (open it over image.nii.gz)"
	@echo "  methods: $(METHODS)"

$(OUT)/brain/brain.st.zst: $(BRAIN) $(BIN)/esg-load
	@mkdir -p $(@D)
	$(BIN)/esg-load --normalise zscore $< -o $@

$(OUT)/brain/axial.png: $(OUT)/brain/brain.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --png $@ --view axial $<
$(OUT)/brain/mosaic.png: $(OUT)/brain/brain.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --png $@ --view axial --mosaic 12 $<
$(OUT)/brain/brain.nii.gz: $(OUT)/brain/brain.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --nifti $@ --tensor image $<

$(OUT)/phantom/phantom.st.zst: $(PHANTOM) $(BIN)/esg-load
	@mkdir -p $(@D)
	$(BIN)/esg-load --normalise zscore $< -o $@
$(OUT)/phantom/image-mip.png: $(OUT)/phantom/phantom.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --png $@ --mip --zoom 4 $<
$(OUT)/phantom/image.nii.gz: $(OUT)/phantom/phantom.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --nifti $@ --tensor image $<

# The U-Net scored over the mask of its own prediction on this phantom:
# differentiable and stable under perturbation (see doc/methods.md).
$(OUT)/phantom/unet3d-fixed.pt: $(UNET) $(OUT)/phantom/phantom.st.zst $(BIN)/esg-wrap
	$(BIN)/esg-wrap -m $(UNET) --reduce fixed-mask --input $(OUT)/phantom/phantom.st.zst \
		--threads $(THREADS) -o $@

# Target class 1: vessel.
$(OUT)/phantom/%.st.zst: $(OUT)/phantom/phantom.st.zst $(OUT)/phantom/unet3d-fixed.pt $(BIN)/esg-attr
	$(BIN)/esg-attr -m $(OUT)/phantom/unet3d-fixed.pt --method $* --target 1 \
		$(PARAMS_$*) --threads $(THREADS) --seed 1 -o $@ $<

$(OUT)/phantom/%-mip.png: $(OUT)/phantom/%.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --png $@ --overlay --mip --zoom 4 $<
$(OUT)/phantom/%.nii.gz: $(OUT)/phantom/%.st.zst $(BIN)/esg-render
	$(BIN)/esg-render --nifti $@ --tensor attribution $<

.PHONY: all
