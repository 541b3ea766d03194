# slurm_cluster.bash - a one-node Slurm cluster for the tests, started and
# stopped by the test itself (source it; see tests/cli/slurm.sh).
#
#   slurm_cluster_start DIR   # munged, slurmctld, slurmd; exports SLURM_CONF
#   slurm_cluster_stop        # stops the daemons it started, by pid
#
# Everything lives under DIR: the munge key, socket and seed, slurm.conf,
# state, spool, pid and log files.  Ports are free ones above 20000, never
# Slurm's defaults (6817/6818), so a cluster that runs on the machine is left
# alone.  The pids of the daemons are also written to
# ${TMPDIR:-/tmp}/esg-slurm-test.pids, so that a test run killed before its
# trap ran is cleaned up by the next one: each pid there is stopped only if
# its command line still names a slurm.conf or munge socket of an
# esg-slurm-test folder.  Needs root (slurmd runs tasks as their user; munged
# --force) and the packages slurm-wlm and munge.
SLURM_PIDS=()
SLURM_PID_REGISTRY=${TMPDIR:-/tmp}/esg-slurm-test.pids

# slurm_cluster_unavailable: prints why a cluster can't start here (nothing if it can)
slurm_cluster_unavailable() {
	[ "$(id -u)" = 0 ] || { echo "not root (slurmd and munged need root)"; return; }
	local p
	for p in munged slurmctld slurmd srun sbatch squeue scontrol scancel; do
		command -v "$p" >/dev/null || { echo "$p not installed (make deps-cluster)"; return; }
	done
}

_slurm_stale_cleanup() {
	[ -f "$SLURM_PID_REGISTRY" ] || return 0
	local pid
	while read -r pid; do
		[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || continue
		if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'esg-slurm-test'; then
			kill "$pid" 2>/dev/null
			for _ in 1 2 3 4 5 6 7 8 9 10; do [ -d "/proc/$pid" ] || break; sleep 0.2; done
			kill -9 "$pid" 2>/dev/null
		fi
	done <"$SLURM_PID_REGISTRY"
	rm -f "$SLURM_PID_REGISTRY"
}

# _free_port: a TCP port nothing listens on
_free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 20000))
		(echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	return 1
}

# slurm_cluster_start DIR: 0 when `srun true` answers; else 1 with the reason on stderr
slurm_cluster_start() {
	local d=$1 host cpus mem ctld_port d_port
	_slurm_stale_cleanup
	mkdir -p "$d"/{munge,state,spool,log}
	chmod 700 "$d/munge"
	host=$(hostname -s)
	cpus=$(nproc)
	# RealMemory below the machine's: what the node may hand out to jobs
	mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
	ctld_port=$(_free_port) && d_port=$(_free_port) || { echo "no free port" >&2; return 1; }
	[ "$ctld_port" != "$d_port" ] || d_port=$((ctld_port + 1))
	dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 status=none
	chmod 400 "$d/munge/munge.key"
	munged --force --foreground --socket="$d/munge/sock" --key-file="$d/munge/munge.key" \
		--pid-file="$d/munge/munged.pid" --log-file="$d/log/munged.log" --seed-file="$d/munge/seed" \
		>/dev/null 2>&1 &
	SLURM_PIDS+=($!)
	echo "$!" >>"$SLURM_PID_REGISTRY"
	for _ in $(seq 1 50); do [ -S "$d/munge/sock" ] && break; sleep 0.1; done
	[ -S "$d/munge/sock" ] || { echo "munged did not start: $(tail -n 2 "$d/log/munged.log" 2>/dev/null)" >&2; return 1; }
	cat >"$d/slurm.conf" <<CONF
ClusterName=esgtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/sock
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=5
MinJobAge=600
DefMemPerCPU=512
InactiveLimit=0
SchedulerType=sched/builtin
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=esgtest Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
	export SLURM_CONF=$d/slurm.conf
	slurmctld -D -f "$SLURM_CONF" >"$d/log/slurmctld.out" 2>&1 &
	SLURM_PIDS+=($!)
	echo "$!" >>"$SLURM_PID_REGISTRY"
	slurmd -D -f "$SLURM_CONF" >"$d/log/slurmd.out" 2>&1 &
	SLURM_PIDS+=($!)
	echo "$!" >>"$SLURM_PID_REGISTRY"
	# the node comes up within seconds; a job answers when it has
	local t
	for t in $(seq 1 60); do
		if timeout 10 srun --immediate=5 true >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	echo "slurm did not answer: $(tail -n 2 "$d/log/slurmctld.log" "$d/log/slurmd.log" 2>/dev/null | tr '\n' ' ')" >&2
	return 1
}

slurm_cluster_stop() {
	local pid
	[ ${#SLURM_PIDS[@]} -gt 0 ] || return 0
	# jobs still in this cluster (a test that stopped half-way): cancelled,
	# so that their srun calls end instead of waiting for a controller
	if [[ ${SLURM_CONF:-} == */esg-slurm-test/slurm.conf ]]; then
		timeout 10 scancel -u "$(id -un)" 2>/dev/null
		for _ in $(seq 1 25); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
	fi
	# slurmd and slurmctld first, munged last
	for ((i = ${#SLURM_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${SLURM_PIDS[$i]}
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	SLURM_PIDS=()
	rm -f "$SLURM_PID_REGISTRY"
}
