# esegeta - build, test, install, demo, bench.  `make list` shows the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SECONDARY:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

PREFIX ?= /usr/local
BUILD ?= build
# Where libtorch lives (Debian's by default; point at a CUDA build to get cuda:N:
# a libtorch download, or a pip torch's directory, which holds include/ and lib/).
TORCH_PREFIX ?= /usr
# A CUDA libtorch has libtorch_cuda.so beside libtorch.so: it is then linked
# (--no-as-needed: nothing calls it by name, yet loading it is what registers
# CUDA with libtorch).  TORCH_CUDA=0 / 1 overrides the guess.
TORCH_CUDA ?= $(if $(wildcard $(TORCH_PREFIX)/lib/libtorch_cuda.so),1,0)
# libtorch 2.14 and later need CXXSTD=c++20.
CXXSTD ?= c++17
PYTHON ?= /usr/bin/python3

CC ?= cc
CXX ?= g++
OPT ?= -O2 -g
SAN ?=
CFLAGS_ALL := -std=c11 $(OPT) $(SAN) -Wall -Wextra -D_GNU_SOURCE -Ilib -Itools -I/usr/include/nifti $(CFLAGS)
CXXFLAGS_ALL := -std=$(CXXSTD) $(OPT) -fPIC -Wall -Wextra -Wno-stringop-overflow -Wno-unused-parameter \
	-Ilib -I$(TORCH_PREFIX)/include -I$(TORCH_PREFIX)/include/torch/csrc/api/include $(CXXFLAGS)
LDLIBS_BASE := -lnifti2 -lznz -lpng -lzstd -lcjson -lz -lm
TORCH_CUDA_LIBS := -Wl,--push-state,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--pop-state
TORCH_RPATH := -Wl,-rpath,$(abspath $(TORCH_PREFIX))/lib
LDLIBS_TORCH := -L$(TORCH_PREFIX)/lib $(if $(filter /usr,$(TORCH_PREFIX)),,$(TORCH_RPATH)) \
	-ltorch -ltorch_cpu -lc10 \
	$(if $(filter 1,$(TORCH_CUDA)),$(TORCH_CUDA_LIBS)) -lstdc++

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

# Tools that reach libtorch; all others must not link it (start-up cost).
TORCH_TOOLS := esg-attr esg-wrap esg-randomise esg-metric esg-config esg-explain

# lib/ is one folder per concern (doc/architecture.md); libesg.a holds every
# C part, the libtorch shim (lib/shim/*.cpp) is linked only into TORCH_TOOLS.
LIB_SRC := $(sort $(wildcard lib/*/*.c lib/*/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# ar keeps members by file name: two sources with one name would replace each other.
LIB_NAME_CLASH := $(shell printf '%s\n' $(notdir $(LIB_SRC)) | sort | uniq -d)
$(if $(LIB_NAME_CLASH),$(error lib/: two sources named $(LIB_NAME_CLASH); libesg.a needs unique names))
SHIM_SRC := $(wildcard lib/shim/*.cpp)
SHIM_OBJ := $(SHIM_SRC:%.cpp=$(BUILD)/%.o)
TOOL_NAMES := $(patsubst tools/%.c,%,$(wildcard tools/esg-*.c))
TOOLS := $(TOOL_NAMES:%=$(BUILD)/bin/%)
TOOL_COMMON := $(BUILD)/tools/cli.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_COMMON := $(BUILD)/tests/tap.o
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
HEADERS := $(wildcard lib/*/*.h lib/*/*/*.h tools/*.h tests/unit/*.h)

## all: build libesg, the shim and every tool (default)
all: $(TOOLS) $(UNIT_BIN)

$(BUILD)/lib/%.o: lib/%.c $(HEADERS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/lib/%.o: lib/%.cpp $(HEADERS) $(wildcard lib/shim/*.hpp)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CXX     $< (libtorch: ~10 s)")
	$(Q)$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(BUILD)/libesg.a: $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tools/%.o: tools/%.c $(HEADERS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/tests/%.o: tests/unit/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_ALL) -Itests/unit -c $< -o $@

define tool_rule
$(BUILD)/bin/$(1): $(BUILD)/tools/$(1).o $(TOOL_COMMON) $(BUILD)/libesg.a $(if $(filter $(1),$(TORCH_TOOLS)),$(SHIM_OBJ))
	@mkdir -p $$(@D)
	@$$(if $$(Q),echo "  LD      $$@")
	$$(Q)$$(CC) $(SAN) $(LDFLAGS) -o $$@ $$(filter-out %.a,$$^) $(BUILD)/libesg.a $(LDLIBS_BASE) $(if $(filter $(1),$(TORCH_TOOLS)),$(LDLIBS_TORCH))
endef
$(foreach t,$(TOOL_NAMES),$(eval $(call tool_rule,$(t))))

# Unit tests that need libtorch are named test_torch_*.
$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(UNIT_COMMON) $(BUILD)/libesg.a
	@mkdir -p $(@D)
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $(filter-out $(BUILD)/libesg.a,$^) $(BUILD)/libesg.a $(if $(filter test_torch_%,$(@F)),$(LDLIBS_TORCH)) $(LDLIBS_BASE)
# (explicit targets: a recipe-less pattern rule would add no prerequisite)
$(filter $(BUILD)/tests/test_torch_%,$(UNIT_BIN)): $(SHIM_OBJ)

## test: build, run every test suite (unit, CLI, Python cross-checks), then the sanitizer run
test: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) tests/run-tests
	$(Q)$(MAKE) --no-print-directory check-asan

## check: run the test suites once, without the sanitizer build
check: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) tests/run-tests

## check-asan: C unit tests and libtorch-free CLI tests under AddressSanitizer + UBSan
check-asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build/asan OPT='-O1 -g' \
		SAN='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all' \
		TOOL_NAMES='$(filter-out $(TORCH_TOOLS),$(TOOL_NAMES))' \
		UNIT_SRC='$(filter-out tests/unit/test_torch_%,$(UNIT_SRC))' all
	$(Q)ASAN_OPTIONS=detect_leaks=1 BUILD=build/asan NO_TORCH=1 PYTHON=$(PYTHON) tests/run-tests --label asan

## fuzz: run each libFuzzer target for FUZZ_SECONDS (default 60) with clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=address,undefined -D_GNU_SOURCE -Ilib -I/usr/include/nifti
FUZZ_OBJ := $(LIB_SRC:lib/%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: lib/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(Q)clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
# An archive, so that each target pulls in only the library parts it uses.
build/fuzz/libesg.a: $(FUZZ_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^
fuzz: build/fuzz/libesg.a $(FUZZ_SRC)
	$(Q)for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
		clang $(FUZZ_FLAGS) -fsanitize=fuzzer $$f build/fuzz/libesg.a -o build/fuzz/$$n $(LDLIBS_BASE); \
		mkdir -p build/fuzz/corpus-$$n; \
		build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-$$n tests/fuzz/seeds-$$n 2>&1 | \
			grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' | sed "s/^/$$n: /"; \
	done

## deps: install the Debian packages the project needs (when any is missing)
DEB_PACKAGES := build-essential libtorch-dev libnifti2-dev libcjson-dev libzstd-dev libpng-dev zstd \
	python3-torch python3-numpy python3-nibabel python3-tqdm python3-matplotlib python3-packaging mricron-data clang libclang-rt-14-dev time man-db \
	chromium chromium-driver fonts-liberation
deps:
	$(Q)missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "deps: missing:" $$missing; \
		echo "deps: run as root: apt-get update && apt-get install -y --no-install-recommends" $$missing; exit 1; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

## deps-cluster: install slurm-wlm and munge, for the one-node Slurm cluster that
##   tests/cli/slurm.sh starts (as root; no daemon is started by the install:
##   the test runs its own munged, slurmctld and slurmd and stops them)
CLUSTER_PACKAGES := slurm-wlm munge
deps-cluster:
	$(Q)missing=$$(for p in $(CLUSTER_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps-cluster: all installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "deps-cluster: missing:" $$missing; \
		echo "deps-cluster: run as root: apt-get update && apt-get install -y --no-install-recommends" $$missing; exit 1; \
	else policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && added=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
		[ -z "$$added" ] || rm -f $$policy; exit $$rc; fi

## demo: the whole experiment on the shipped data (configs/demo.json): maps of a
##   dozen methods on two phantoms and three models (U-Net, UNet-MSS, UNet-MSS with
##   deformation) plus a randomised U-Net, randomisation, metrics, explanations
##   (esg-explain), HTML report; then the 2D classifier's (configs/angio2d.json)
DEMO_CONFIG ?= configs/demo.json configs/angio2d.json
DEMO_ARGS ?= -j2 THREADS=1
demo: all
	$(Q)rc=0; for c in $(DEMO_CONFIG); do pipelines/run $$c BUILD=$(BUILD) $(DEMO_ARGS) || rc=1; done; exit $$rc

## screenshots: doc/report.png and doc/builder.png in headless Chromium, from the
##   demo's report (run `make demo` first; SCREENSHOT_REPORT=angio2d-out/report.html
##   for another) and the builder page
SCREENSHOT_REPORT ?= demo-out/report.html
screenshots: all
	$(Q)test -f $(SCREENSHOT_REPORT) || { echo "screenshots: no $(SCREENSHOT_REPORT): run make demo first" >&2; exit 1; }
	$(Q)$(BUILD)/bin/esg-config --builder $(BUILD)/builder.html
	$(Q)$(PYTHON) doc/screenshots.py $(SCREENSHOT_REPORT) $(BUILD)/builder.html doc

## bench: time every method on the shipped models (results in bench/)
bench: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) $(PYTHON) bench/run_bench.py $(BENCH_ARGS)

## bench-explain: esg-explain against the same loop in plain PyTorch (bench/explain_results.md)
bench-explain: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) $(PYTHON) bench/explain_bench.py

## bench-local: receptive-field-local occlusion vs the whole volume, U-Net at 256x256x128 (bench/local.md)
bench-local: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) $(PYTHON) bench/local_speedup.py $(BENCH_ARGS)

## bench-patches: patched runs (patches sharing calls, and one by one) against the whole volume, U-Net at 128x128x96 (bench/patches.md)
bench-patches: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) $(PYTHON) bench/patches.py $(BENCH_ARGS)

## bench-large: methods at full size, 480x640x163 phantom and Colin27, 2 threads, default flags (bench/large.md; ~18 GB peak)
bench-large: all
	$(Q)BUILD=$(BUILD) PYTHON=$(PYTHON) $(PYTHON) bench/large.py $(BENCH_ARGS)

## install: install tools, man pages, share/ and the pipelines under PREFIX
##   (run one with BIN=PREFIX/bin)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/esegeta
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1/
	cp -R share/. $(DESTDIR)$(PREFIX)/share/esegeta/
	install -d $(DESTDIR)$(PREFIX)/share/esegeta/pipelines
	install -m 755 pipelines/run pipelines/run-job pipelines/summary pipelines/cat-tables \
		pipelines/copy-into-place $(DESTDIR)$(PREFIX)/share/esegeta/pipelines/
	install -m 644 pipelines/run.mk $(DESTDIR)$(PREFIX)/share/esegeta/pipelines/

## clean: remove build outputs
clean:
	rm -rf build demo-out angio2d-out

## list: print the targets with one line each
list:
	@grep -E '^## ' $(firstword $(MAKEFILE_LIST)) | sed 's/^## /  /'

.PHONY: all test check check-asan fuzz deps deps-cluster demo screenshots bench bench-explain bench-local bench-patches bench-large install clean list
