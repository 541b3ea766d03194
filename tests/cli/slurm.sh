#!/usr/bin/env bash
# needs: torch
# The Make pipelines on a real one-node Slurm cluster, started (and stopped,
# by pid) by this test (tests/cli/slurm_cluster.bash): configs/angio2d.json
# through srun with -j2 -- every job a Slurm job, the same outputs as a local
# run, a second run submits nothing; a job past Slurm's time limit and a
# job that finishes itself at a 1-second timeout inside Slurm are reported
# as timed out and leave no output; a scancelled job is reported as such and
# a re-run finishes it; --submit finishes the run after pipelines/run has
# returned; --status says what is done and pending.  Skips with one line
# where Slurm can't run (not root, slurm-wlm or munge not installed: make
# deps-cluster).
. "$(dirname "$0")/lib.sh"
. "$ESG_ROOT/tests/cli/slurm_cluster.bash"

BIN=${ESG_BIN:-$ESG_ROOT/build/bin}
RUN="$ESG_ROOT/pipelines/run"

# ---- esg-config: jobs.scheduler and jobs.slurm (no cluster needed) -----------
bad() { # bad DESC PATTERN JOBS-JSON
	printf '{"output": "o", "inputs": [{"image": "%s"}], "models": [{"name": "m", "file": "%s"}], "methods": [{"name": "saliency"}], "jobs": %s}\n' \
		"$ESG_ROOT/share/data/angio2d_20001_aneurysm.png" "$ESG_ROOT/share/models/classifier2d.pt" "$3" >bad.json
	expect_fail "esg-config refuses $1" 1 "^esg-config: error: bad.json: $2" esg-config bad.json
	[ "$(wc -l <"$T/.err")" = 1 ] || not_ok "$1: one line ($(cat "$T/.err"))"
}
bad "an unknown scheduler" "jobs\.scheduler: unknown value 'pbs' \(known: local, slurm\)" '{"threads": 1, "scheduler": "pbs"}'
bad "slurm without threads" 'jobs\.threads: must be set .* --cpus-per-task' '{"scheduler": "slurm"}'
bad "an unknown jobs.slurm field" 'jobs\.slurm\.qos: unknown field \(known here: partition, account, args, local_kinds, mem, time_margin\)' \
	'{"threads": 1, "slurm": {"qos": "x"}}'
bad "an unknown local kind" "jobs\.slurm\.local_kinds\[1\]: unknown value 'plot'" '{"threads": 1, "slurm": {"local_kinds": ["load", "plot"]}}'
bad "a bad memory size" "jobs\.slurm\.mem\.attr: '4GB' is not a size" '{"threads": 1, "slurm": {"mem": {"attr": "4GB"}}}'
bad "memory for an unknown kind" 'jobs\.slurm\.mem\.atr: unknown job kind' '{"threads": 1, "slurm": {"mem": {"atr": "4G"}}}'
bad "an srun argument that is no option" "jobs\.slurm\.args\[0\]: 'long' is not an option" '{"threads": 1, "slurm": {"args": ["long"]}}'
bad "a shell character in an srun argument" "jobs\.slurm\.args\[0\]: .*can't be passed" '{"threads": 1, "slurm": {"args": ["--qos=a;b"]}}'
bad "a partition with a blank" "jobs\.slurm\.partition: .*can't be passed" '{"threads": 1, "slurm": {"partition": "a b"}}'
bad "a negative time margin" 'jobs\.slurm\.time_margin: -1 is out of range' '{"threads": 1, "slurm": {"time_margin": -1}}'
printf '{"output": "o", "inputs": [{"image": "%s"}], "models": [{"name": "m", "file": "%s"}], "methods": [{"name": "saliency", "timeout": 30}], "jobs": %s}\n' \
	"$ESG_ROOT/share/data/angio2d_20001_aneurysm.png" "$ESG_ROOT/share/models/classifier2d.pt" \
	'{"threads": 2, "devices": ["cuda:1"], "scheduler": "slurm", "slurm": {"partition": "gpu", "account": "lab", "args": ["--qos=long"], "local_kinds": ["load", "render"], "mem": {"attr": 3000, "load": "2G"}, "time_margin": 90}}' >good.json
check "esg-config accepts a full jobs.slurm" esg-config --make good.mk --output o good.json
check "the fragment carries jobs.slurm for run.mk" bash -c 'grep -qx "ESG_SCHEDULER := slurm" good.mk && grep -qx "ESG_SLURM_PARTITION := gpu" good.mk &&
	grep -qx "ESG_SLURM_ACCOUNT := lab" good.mk && grep -qx "ESG_SLURM_ARGS := --qos=long" good.mk && grep -qx "ESG_SLURM_TIME_MARGIN := 90" good.mk &&
	grep -qx "ESG_SLURM_LOCAL_KINDS := load render" good.mk && grep -q "^ESG_SLURM_MEM := load=2G .*attr=3000M " good.mk'
check "a job's rule gives run-job its kind, CPUs, device and timeout" \
	grep -q '$(JOB) --kind attr --cpus $(THREADS) --device cuda:1 --timeout 30 -- $(ESG_ATTR) .* --device $(call esg_device,cuda:1) --timeout 30$' good.mk
# what run-job asks srun for, with a stand-in srun that prints its arguments
mkdir -p fake
printf '#!/bin/sh\necho "$*" >"%s/fake/srun.args"\nexit 3\n' "$T" >fake/srun
chmod +x fake/srun
PATH="$T/fake:$PATH" ESG_JOB_SCHEDULER=slurm ESG_JOB_MEM="load=1G attr=3000M" ESG_JOB_TIME_MARGIN=90 \
	ESG_JOB_SLURM_ARGS="--partition=gpu --qos=long" "$ESG_ROOT/pipelines/run-job" "$T/o" "$T/o/x.st.zst" \
	--kind attr --cpus 2 --device cuda:1 --timeout 30 -- true >/dev/null 2>&1
check "run-job: --cpus-per-task, --mem of the kind, a GPU, --time = timeout + margin in minutes, the user's options" \
	grep -q -- '^--job-name=esg:x.st.zst --ntasks=1 --nodes=1 --cpus-per-task=2 --mem=3000M --gres=gpu:1 --time=2 --partition=gpu --qos=long bash' fake/srun.args
rm -f fake/srun.args
PATH="$T/fake:$PATH" ESG_JOB_SCHEDULER=slurm ESG_JOB_LOCAL_KINDS="load render" "$ESG_ROOT/pipelines/run-job" "$T/o" "$T/o/y" \
	--kind load -- touch "$T/o/y" >/dev/null 2>&1
check "run-job: a local kind runs here" bash -c "test -e o/y && ! test -e fake/srun.args && grep -q '^status: ok' o/logs/y.log"
(cd "$ESG_ROOT" && make --no-print-directory -f pipelines/run.mk CONFIG="$T/good.json" OUT="$T/o" BIN="$BIN" -n jobs) >plan.txt 2>&1
check "run.mk: on Slurm a job's GPU is its cuda:0" grep -q 'esg-attr .* --device cuda:0 --timeout 30$' plan.txt
(cd "$ESG_ROOT" && make --no-print-directory -f pipelines/run.mk CONFIG="$T/good.json" OUT="$T/o" BIN="$BIN" SCHEDULER=local -n jobs) >plan.txt 2>&1
check "and cuda:1 where it runs locally" grep -q 'esg-attr .* --device cuda:1 --timeout 30$' plan.txt
expect_fail "pipelines/run refuses a --slurm-arg that is no option" 2 "^run: --slurm-arg 'long' is not an option" \
	"$RUN" good.json --slurm-arg long
expect_fail "pipelines/run --slurm refuses THREADS=0 before anything runs" 1 "THREADS=0 \(all cores\) can't run on Slurm" \
	"$RUN" good.json --slurm THREADS=0 BIN="$BIN"
no_file "nothing ran" o/inputs
expect_fail "pipelines/run refuses --submit with --local" 2 "^run: --submit runs on Slurm" "$RUN" good.json --local --submit
check "pipelines/run --help names the Slurm options" bash -c "'$RUN' --help | grep -q -- '--slurm-arg ARG' && '$RUN' --help | grep -q -- '--submit'"

why=$(slurm_cluster_unavailable)
if [ -n "$why" ]; then
	skip "Slurm: $why"
	done_testing
fi
trap 'slurm_cluster_stop; rm -rf "$T"' EXIT
trap 'exit 143' TERM INT HUP
# a daemon a killed earlier run left behind (its pid in the registry, its
# command line naming an esg-slurm-test folder) is stopped first
(exec -a "$T/esg-slurm-test-stale/slurmd" sleep 600) &
stale=$!
# the cleanup knows it by its command line: wait until exec has renamed it
for _ in $(seq 1 50); do
	tr '\0' ' ' <"/proc/$stale/cmdline" 2>/dev/null | grep -q esg-slurm-test-stale && break
	sleep 0.1
done
echo "$stale" >>"$SLURM_PID_REGISTRY"
if ! slurm_cluster_start "$T/esg-slurm-test" 2>start.err; then
	not_ok "a one-node Slurm cluster starts ($(head -c 300 start.err))"
	done_testing
fi
ok "a one-node Slurm cluster answers (srun) on ports $(grep -h 'Port=' "$SLURM_CONF" | tr '\n' ' ')"
st=$(awk '{ print $3 }' "/proc/$stale/stat" 2>/dev/null) # Z: ended, waiting for this shell
if [ -n "$st" ] && [ "$st" != Z ]; then not_ok "a stale daemon from an earlier run is stopped"; kill "$stale"; else
	ok "a stale daemon from an earlier run is stopped"; fi
wait "$stale" 2>/dev/null
n_slurm_jobs() { scontrol -o show jobs 2>/dev/null | grep -c '^JobId='; }

# ---- Slurm's own time limit (in the background: it takes Slurm a minute) ----
# timeout 1 s, no margin: --time=1 (Slurm counts minutes); the command
# outlives it and never writes its target
mkdir -p tl
(ESG_JOB_SCHEDULER=slurm ESG_JOB_TIME_MARGIN=0 ESG_JOB_MEM="attr=100M" \
	"$ESG_ROOT/pipelines/run-job" "$T/tl" "$T/tl/never.txt" --kind attr --timeout 1 -- \
	bash -c 'sleep 300 && echo done >"$0"' "$T/tl/never.txt" >tl.out 2>tl.err
echo "$?" >tl.rc) &
tl_pid=$!

# ---- the memory budget (jobs.memory, ESG_MEMORY) reaches a Slurm job ----------
mkdir -p em
ESG_JOB_SCHEDULER=slurm ESG_JOB_MEM="attr=100M" ESG_MEMORY=90% "$ESG_ROOT/pipelines/run-job" "$T/em" "$T/em/m.txt" \
	--kind attr -- bash -c 'echo "${ESG_MEMORY:-unset} $SLURM_JOB_ID" >"$0"' "$T/em/m.txt" >em.out 2>&1
check "ESG_MEMORY reaches the job inside Slurm" grep -qx '90% [0-9][0-9]*' em/m.txt

# ---- angio2d locally, then through Slurm -------------------------------------
cd "$ESG_ROOT" || exit 1
s=$EPOCHREALTIME
"$RUN" configs/angio2d.json OUT="$T/local" BIN="$BIN" -j2 >"$T/local.out" 2>&1
rc=$?
local_s=$(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
[ $rc = 0 ] && ok "angio2d runs locally with -j2 ($local_s s)" || not_ok "local run: exit $rc ($(tail -n 5 "$T/local.out"))"
before=$(n_slurm_jobs)
s=$EPOCHREALTIME
"$RUN" configs/angio2d.json --slurm OUT="$T/slurm" BIN="$BIN" -j2 >"$T/slurm.out" 2>&1
rc=$?
slurm_s=$(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
[ $rc = 0 ] && ok "angio2d runs through Slurm with -j2 ($slurm_s s)" || not_ok "Slurm run: exit $rc ($(tail -n 5 "$T/slurm.out"))"
cd "$T" || exit 1
jobs=$(find slurm/logs -name '*.log' ! -name 'controller-*' | wc -l)
in_slurm=$(find slurm/logs -name '*.log' ! -name 'controller-*' -exec grep -l '^slurm_job: [0-9][0-9]*$' {} + | wc -l)
[ "$jobs" -gt 40 ] && [ "$jobs" = "$in_slurm" ] && ok "every job ($jobs) ran as a Slurm job: its log names the job id" ||
	not_ok "$in_slurm of $jobs job logs name a Slurm job"
submitted=$(($(n_slurm_jobs) - before))
[ "$submitted" = "$jobs" ] && ok "Slurm saw one job per job ($submitted)" || not_ok "Slurm saw $submitted jobs for $jobs"
check "a job's log has the srun line: one task, its CPUs, memory, time limit" \
	grep -qE '^srun: --job-name=esg:attr/aneurysm/classifier2d/saliency\.st\.zst --ntasks=1 --nodes=1 --cpus-per-task=1 --mem=4G --time=3$' \
	slurm/logs/attr/aneurysm/classifier2d/saliency.st.zst.log
check "and how Slurm saw it end" grep -q '^slurm_state: COMPLETED$' slurm/logs/attr/aneurysm/classifier2d/saliency.st.zst.log

# the same outputs: tensors equal (atol 0), NIfTI files and the randomised
# models' tensors byte for byte, tables equal but for the output folder
same_outputs() { # DIR: the files of DIR equal local's
	local f bad=
	while read -r f; do
		case $f in
		*.st.zst) esg-compare -q "local/$f" "$1/$f" || bad="$bad $f" ;;
		*.tsv) [ "$f" = summary.tsv ] || cmp -s <(sed "s|$T/local/||g" "local/$f") <(sed "s|$T/$1/||g" "$1/$f") || bad="$bad $f" ;;
		*.pt) cmp -s <(unzip -p "local/$f" '*/data/*') <(unzip -p "$1/$f" '*/data/*') || bad="$bad $f" ;;
		*.nii.gz | *.json | *.args | pipeline.mk) cmp -s "local/$f" "$1/$f" || bad="$bad $f" ;;
		esac
		[ -e "$1/$f" ] || bad="$bad $f(missing)"
	done < <(cd local && find . -type f ! -path './logs/*' ! -name report.html | sed 's|^\./||')
	[ -z "$bad" ] || { echo "differ:$bad" >&2; return 1; }
}
check "the outputs equal the local run's (tensors, NIfTI, tables, models, stamps)" same_outputs slurm

before=$(n_slurm_jobs)
(cd "$ESG_ROOT" && "$RUN" configs/angio2d.json --slurm OUT="$T/slurm" BIN="$BIN" -j2) >again.out 2>&1
rc=$?
[ $rc = 0 ] && [ "$(n_slurm_jobs)" = "$before" ] && ! grep -q '\[slurm' again.out &&
	ok "a second run submits nothing" || not_ok "second run: exit $rc, $(($(n_slurm_jobs) - before)) Slurm jobs ($(tail -n 3 again.out))"
(cd "$ESG_ROOT" && "$RUN" configs/angio2d.json --local OUT="$T/slurm" BIN="$BIN") >again-local.out 2>&1
rc=$?
[ $rc = 0 ] && ! grep -qE '^[a-z]+ +[0-9.]+ s  ' again-local.out &&
	ok "nor does a local run over the cluster's output (the same targets and stamps)" ||
	not_ok "local run over the cluster's output: exit $rc ($(tail -n 3 again-local.out))"

# ---- a slow job: timed out inside Slurm, scancelled, re-run ------------------
slow_config() { # TIMEOUT-FIELD
	cat <<EOF
{"output": "slow",
 "inputs": [{"image": "$ESG_ROOT/share/data/angio2d_20001_aneurysm.png", "name": "img"}],
 "load": {"normalise": "zscore", "channels": "gray"},
 "models": [{"name": "m", "file": "$ESG_ROOT/share/models/classifier2d.pt"}],
 "target": 1,
 "methods": [{"name": "slow", "method": "integrated_gradients", "params": {"n_steps": 400}, "internal_batch": 1$1}],
 "jobs": {"threads": 1, "scheduler": "slurm", "slurm": {"mem": {"attr": "1G", "load": 500, "render": "500M"}}},
 "report": false}
EOF
}
slow_config ', "timeout": 1' >slow1.json
"$RUN" slow1.json BIN="$BIN" >slow1.out 2>&1
rc=$?
LOG=slow/logs/attr/img/m/slow.st.zst.log
[ $rc = 1 ] && grep -q '^status: timed out$' $LOG && grep -q '^slurm_job: [0-9]' $LOG &&
	ok "a job with a 1-second timeout, run by Slurm, is reported as timed out" ||
	not_ok "1-second timeout: exit $rc, $(grep -E '^(status|slurm_job):' $LOG | tr '\n' ' ')"
no_file "it leaves no output" slow/attr/img/m/slow.st.zst slow/maps/img/m/slow.nii.gz
check "the summary says it timed out" grep -qE '^  attr/img/m/slow.st.zst: timed out -- ' slow1.out

slow_config '' >slow.json
"$RUN" slow.json BIN="$BIN" >cancel.out 2>&1 &
run_pid=$!
id=
for _ in $(seq 1 300); do
	id=$(squeue -h -t RUNNING -n esg:attr/img/m/slow.st.zst -o %i 2>/dev/null)
	[ -n "$id" ] && break
	sleep 0.1
done
if [ -n "$id" ]; then
	sleep 1
	scancel "$id"
	wait "$run_pid"
	rc=$?
	[ $rc = 1 ] && grep -q '^status: cancelled (Slurm)$' $LOG && grep -q "^slurm_job: $id$" $LOG &&
		grep -q '^reason: Slurm job [0-9]* CANCELLED' $LOG && ok "a scancelled job is reported as cancelled by Slurm, with its job id" ||
		not_ok "scancel: exit $rc, $(grep -E '^(status|slurm_|reason)' $LOG | tr '\n' ' ')"
	no_file "it leaves no output" slow/attr/img/m/slow.st.zst slow/maps/img/m/slow.nii.gz
	check "the summary lists it with Slurm's reason" grep -qE '^  attr/img/m/slow.st.zst: cancelled \(Slurm\) -- Slurm job [0-9]+ CANCELLED' cancel.out
	"$RUN" slow.json --status BIN="$BIN" >status1.out 2>&1
	check "--status: the cancelled job failed, its map is pending" \
		bash -c 'grep -q "^status: slow: 4 jobs: 2 done, 0 running, 1 failed, 1 pending" status1.out &&
			grep -q "^  attr/img/m/slow.st.zst: cancelled (Slurm) -- Slurm job" status1.out'
	# the node has finished cleaning up the cancelled job (KillWait)
	for _ in $(seq 1 100); do [ -z "$(squeue -h -j "$id" 2>/dev/null)" ] && break; sleep 0.2; done
	"$RUN" slow.json BIN="$BIN" >rerun.out 2>&1
	rc=$?
	[ $rc = 0 ] && [ -s slow/attr/img/m/slow.st.zst ] && grep -q '^status: ok$' $LOG &&
		[ "$(grep -cE '^ok ' rerun.out)" = 2 ] && ok "a re-run finishes exactly it (and its map)" ||
		not_ok "re-run: exit $rc, $(grep -E '^[a-z]+ +[0-9.]+ s' rerun.out | tr '\n' ' ') $(grep -A 8 '^slurm_job' $LOG | tr '\n' ' ')"
else
	kill "$run_pid" 2>/dev/null
	wait "$run_pid"
	not_ok "the slow job never showed as RUNNING in squeue ($(tail -n 3 cancel.out))"
fi

# ---- --submit: the run goes on after pipelines/run has returned ---------------
rm -f slurm/attr/aneurysm/classifier2d/saliency.st.zst slurm/maps/aneurysm/classifier2d/occlusion.nii.gz
cd "$ESG_ROOT" || exit 1
s=$EPOCHREALTIME
"$RUN" configs/angio2d.json --slurm --submit -j2 OUT="$T/slurm" BIN="$BIN" >"$T/submit.out" 2>&1
rc=$?
cd "$T" || exit 1
took=$(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
ctl=$(cat slurm/controller.jobid 2>/dev/null)
[ $rc = 0 ] && [ -n "$ctl" ] && [ "$took" -lt 15 ] && grep -q "^run: submitted Slurm job $ctl" submit.out &&
	ok "--submit returns at once ($took s) with the controller's job id" || not_ok "--submit: exit $rc in $took s ($(cat submit.out))"
(cd "$ESG_ROOT" && "$RUN" configs/angio2d.json --status OUT="$T/slurm" BIN="$BIN") >status2.out 2>&1
check "--status names the controller and what is left" \
	bash -c "grep -q '^controller: Slurm job $ctl ' status2.out && grep -qE '^status: .*: [0-9]+ jobs: [0-9]+ done' status2.out"
for _ in $(seq 1 600); do
	[ -n "$(squeue -h -j "$ctl" 2>/dev/null)" ] || break
	sleep 0.2
done
[ -z "$(squeue -h -j "$ctl" 2>/dev/null)" ] && grep -q '^run: done' "slurm/logs/controller-$ctl.out" &&
	ok "the controller job finished the run" || not_ok "controller $ctl: $(tail -n 3 "slurm/logs/controller-$ctl.out" 2>&1)"
check "the redone jobs ran as Slurm jobs of their own" \
	grep -qE '^ok .*attr/aneurysm/classifier2d/saliency.st.zst \[slurm [0-9]+\]' "slurm/logs/controller-$ctl.out"
check "and the outputs equal the local run's again" same_outputs slurm
(cd "$ESG_ROOT" && "$RUN" configs/angio2d.json --status OUT="$T/slurm" BIN="$BIN") >status3.out 2>&1
# The count of jobs follows the shipped config; all of them must be done.
grep -qE '^status: .*: ([0-9]+) jobs: \1 done, 0 running, 0 failed, 0 pending' status3.out && ok "--status: all done" ||
	not_ok "--status: all done ($(head -c 600 status3.out | tr '\n' ' '))"

# ---- Slurm's time limit ----------------------------------------------------------
wait "$tl_pid"
[ "$(cat tl.rc)" != 0 ] && grep -q '^status: timed out (Slurm time limit)$' tl/logs/never.txt.log &&
	grep -q '^reason: Slurm job [0-9]* TIMEOUT' tl/logs/never.txt.log && grep -q '^srun: .* --time=1$' tl/logs/never.txt.log &&
	ok "a job past its Slurm time limit is reported as timed out by Slurm" ||
	not_ok "Slurm time limit: exit $(cat tl.rc), $(grep -E '^(status|reason|srun):' tl/logs/never.txt.log 2>&1 | tr '\n' ' ')"
no_file "it leaves no output" tl/never.txt

# ---- the cluster is stopped: no daemon left --------------------------------------
pids=("${SLURM_PIDS[@]}")
slurm_cluster_stop
left=
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
[ -z "$left" ] && ok "the test stopped munged, slurmctld and slurmd (pids ${pids[*]})" || not_ok "still running:$left"
echo "# angio2d -j2: local $local_s s, through Slurm $slurm_s s"
done_testing
