# run.mk - a JSON run config (doc/config.md) as Make jobs.
#
#   make -f pipelines/run.mk CONFIG=configs/demo.json [OUT=DIR] [-j N] [-k] [THREADS=T]
#
# esg-config turns the config into $(OUT)/pipeline.mk -- one rule per job,
# each depending on its inputs, its tool and a stamp of its arguments -- and
# Make runs what is missing or out of date.  Every job goes through run-job
# (a log per job in $(OUT)/logs); the tools write outputs atomically, so a
# failed, timed-out or killed job leaves nothing Make would take as done.
# pipelines/run wraps this with -k, a report of what finished and a summary.
#
# SCHEDULER=slurm (or jobs.scheduler in the config) runs each job through
# srun instead (doc/cluster.md); PARTITION=, ACCOUNT= and SLURM_ARGS= add to
# the config's jobs.slurm.  The targets and stamps are the same either way,
# so a run can move between a workstation and a cluster.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
# PLAN=1 (pipelines/run --status: make -n): what a run would redo, down to
# the files that depend on a missing one
ifeq ($(PLAN),)
.SECONDARY:
endif
.SECONDEXPANSION:
MAKEFLAGS += --no-builtin-rules

PIPELINES := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CONFIG ?= configs/demo.json
BUILD ?= build
BIN ?= $(BUILD)/bin
ifeq ($(OUT),)
OUT := $(shell $(BIN)/esg-config --get output $(CONFIG))
endif
ifeq ($(OUT),)
$(error cannot read the output folder of $(CONFIG): is $(BIN)/esg-config built, the config valid?)
endif

ESG_LOAD := $(BIN)/esg-load
ESG_WRAP := $(BIN)/esg-wrap
ESG_ATTR := $(BIN)/esg-attr
ESG_RANDOMISE := $(BIN)/esg-randomise
ESG_METRIC := $(BIN)/esg-metric
ESG_RENDER := $(BIN)/esg-render
ESG_EXPLAIN := $(BIN)/esg-explain
export ESG_RENDER
COPY := $(PIPELINES)/copy-into-place
JOB = @$(PIPELINES)/run-job $(OUT) $@

all: jobs
.PHONY: all jobs report tables summary

include $(OUT)/pipeline.mk
all: $(if $(ESG_REPORT),report)

# Where jobs run: the config's jobs.scheduler and jobs.slurm, unless the
# make line says otherwise.  run-job reads them from its environment.
ifneq ($(origin SCHEDULER),command line)
SCHEDULER = $(or $(ESG_SCHEDULER),local)
endif
PARTITION ?=
ACCOUNT ?=
SLURM_ARGS ?=
ifneq ($(ESG_SCHEDULER),)
ifeq ($(filter local slurm,$(SCHEDULER)),)
$(error SCHEDULER=$(SCHEDULER): must be local or slurm)
endif
ifeq ($(SCHEDULER)$(THREADS),slurm0)
$(error THREADS=0 (all cores) can't run on Slurm: set jobs.threads or THREADS=N, which becomes --cpus-per-task)
endif
endif
PARTITION_ARG = $(or $(PARTITION),$(ESG_SLURM_PARTITION))
ACCOUNT_ARG = $(or $(ACCOUNT),$(ESG_SLURM_ACCOUNT))
export ESG_JOB_SCHEDULER = $(SCHEDULER)
export ESG_JOB_SLURM_ARGS = $(strip $(if $(PARTITION_ARG),--partition=$(PARTITION_ARG)) \
	$(if $(ACCOUNT_ARG),--account=$(ACCOUNT_ARG)) $(ESG_SLURM_ARGS) $(SLURM_ARGS))
export ESG_JOB_LOCAL_KINDS = $(ESG_SLURM_LOCAL_KINDS)
export ESG_JOB_MEM = $(ESG_SLURM_MEM)
export ESG_JOB_TIME_MARGIN = $(ESG_SLURM_TIME_MARGIN)
# A job's device: as the config says here; on a cluster each job is given
# its own GPU, which it sees as cuda:0.
esg_device = $(if $(filter slurm,$(SCHEDULER)),$(patsubst cuda:%,cuda:0,$(1)),$(1))

# The fragment is remade when the config or esg-config changes; the stamps
# it writes change only for jobs whose arguments changed.
$(OUT)/pipeline.mk: $(CONFIG) $(BIN)/esg-config
	@mkdir -p $(@D)
	$(BIN)/esg-config --make $@ --output $(OUT) $(CONFIG)

# PARTIAL=1: tables and report from the jobs that finished (after a -k run
# with failures); otherwise they need every job.
have = $(if $(PARTIAL),$(wildcard $(1)),$(1))
TABLE_PARTS_ground_truth := $(call have,$(ESG_GT_TABLES))
TABLE_PARTS_fidelity := $(call have,$(ESG_FIDELITY_TABLES))
TABLE_PARTS_randomisation := $(call have,$(ESG_RANDOM_TABLES))
TABLE_PARTS_curves := $(call have,$(ESG_CURVE_TABLES))
TABLES := $(foreach t,ground_truth fidelity randomisation curves,$(if $(TABLE_PARTS_$(t)),$(OUT)/tables/$(t).tsv))

$(OUT)/tables/%.tsv: $$(TABLE_PARTS_$$*) $(PIPELINES)/cat-tables
	$(JOB) --kind table -- $(PIPELINES)/cat-tables $@ $(TABLE_PARTS_$*)

# The deletion / insertion curves are written by the fidelity job beside its
# table (esg-metric --curves, committed before the table).  They take the
# table's time, or Make would find them older than it and redo whatever
# reads them on every run (and --status would never say done).
$(OUT)/metrics/%.curves.tsv: $(OUT)/metrics/%.fidelity.tsv
	@test -f $@ || { echo "$@: not written by the job of $<" >&2; exit 1; }
	@touch -r $< $@

jobs: $(ESG_ATTRS) $(ESG_RANDOM_ATTRS) $(ESG_MAPS) $(ESG_EXPLAINS) $(TABLES)
tables: $(TABLES)

# the explanations (esg-explain) go into the report's galleries
REPORT_STREAMS := $(call have,$(ESG_ATTRS) $(ESG_RANDOM_ATTRS) $(ESG_EXPLAINS))
report: $(if $(ESG_REPORT),$(OUT)/report.html)
# The report's summary reads the jobs' logs as they are now (summary.tsv).
$(OUT)/report.html: $(REPORT_STREAMS) $(call have,$(ESG_MAPS)) $(TABLES) $(OUT)/.args/report.html.args $(ESG_RENDER)
	@$(PIPELINES)/summary -q $(OUT)
	$(JOB) --kind report -- $(ESG_RENDER) --html $@ $(ESG_REPORT_ARGS) $(foreach t,$(TABLES),--table $(t)) --table $(OUT)/summary.tsv \
		$(if $(PARTIAL),--title 'Partial report: some jobs failed (see summary.tsv and logs/)') \
		--link 'maps/{input}/{model}/{method}.nii.gz' $(REPORT_STREAMS)

summary:
	@$(PIPELINES)/summary $(OUT)
