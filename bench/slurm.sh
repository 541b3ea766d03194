#!/usr/bin/env bash
# bench/slurm.sh [RUNS]: what running the pipelines through Slurm costs, on a
# one-node cluster started here (tests/cli/slurm_cluster.bash; root, slurm-wlm
# and munge: make deps-cluster).  Prints
#   - configs/angio2d.json with -j2, locally then through Slurm, back to back
#     (RUNS times each, alternating; fresh output folders);
#   - the per-job overhead of srun: the median of 20 `srun true` against
#     20 plain `true`, and the median over the Slurm run's jobs of
#     job_wall_s - wall_s (run-job's srun call vs the tool's own time);
#   - the Slurm run's outputs compared with the local one's.
#   BUILD=build bench/slurm.sh 2
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-${BUILD:-$root/build}/bin}
runs=${1:-1}
. "$root/tests/cli/slurm_cluster.bash"
why=$(slurm_cluster_unavailable)
[ -z "$why" ] || { echo "bench/slurm.sh: $why" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/esg-bench.XXXXXX")
trap 'slurm_cluster_stop; rm -rf "$T"' EXIT
trap 'exit 143' TERM INT HUP
slurm_cluster_start "$T/esg-slurm-test" || exit 1
cd "$root" || exit 1
load0=$(cut -d" " -f1-3 /proc/loadavg)
med() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.3f\n", m }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }
for r in $(seq 1 "$runs"); do
	for mode in local slurm; do
		s=$EPOCHREALTIME
		pipelines/run configs/angio2d.json "--$mode" -j2 OUT="$T/$mode$r" BIN="$bin" \
			>"$T/$mode$r.out" 2>&1 || { echo "$mode run failed: $(tail -n 3 "$T/$mode$r.out")" >&2; exit 1; }
		echo "$mode $(secs "$s" "$EPOCHREALTIME")" >>"$T/walls"
	done
done
echo "angio2d -j2 ($runs run(s) of each, $(nproc) cores, load average before: $load0):"
for mode in local slurm; do
	printf '  %-6s median %6.1f s  (runs: %s)\n' "$mode" "$(awk -v m=$mode '$1 == m { print $2 }' "$T/walls" | med)" \
		"$(awk -v m=$mode '$1 == m { printf "%s ", $2 }' "$T/walls")"
done
for i in $(seq 1 20); do s=$EPOCHREALTIME; srun true; secs "$s" "$EPOCHREALTIME"; done | med >"$T/srun"
for i in $(seq 1 20); do s=$EPOCHREALTIME; /bin/true; secs "$s" "$EPOCHREALTIME"; done | med >"$T/plain"
echo "srun true: median $(cat "$T/srun") s (20 calls; /bin/true without srun: $(cat "$T/plain") s)"
find "$T/slurm1/logs" -name '*.log' ! -name 'controller-*' -exec awk -F': ' '
	$1 == "wall_s" { w = $2 } $1 == "job_wall_s" { j = $2 } END { if (j != "") printf "%.2f\n", j - w }' {} \; >"$T/over"
echo "per job, srun call minus the tool's own wall time: median $(med <"$T/over") s, max $(sort -g "$T/over" | tail -n 1) s over $(grep -c . "$T/over") jobs"
bad=0
while read -r f; do
	case $f in *.st.zst) "$bin/esg-compare" -q "$T/local1/$f" "$T/slurm1/$f" || bad=$((bad + 1)) ;;
	*.nii.gz) cmp -s "$T/local1/$f" "$T/slurm1/$f" || bad=$((bad + 1)) ;; esac
done < <(cd "$T/local1" && find . -name '*.st.zst' -o -name '*.nii.gz')
echo "outputs: $bad streams or NIfTI files differ between the local and the Slurm run"
