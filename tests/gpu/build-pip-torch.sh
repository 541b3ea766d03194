#!/usr/bin/env bash
# Build esegeta against the (CUDA) libtorch inside a pip-installed torch and
# run the CUDA-against-CPU checks (tests/cli/cuda.sh).  For a GPU machine
# that has python3 with a CUDA torch but not the Debian build dependencies.
#
# Usage: tests/gpu/build-pip-torch.sh [DEBS_DIR]
#   DEBS_DIR  Debian packages (.deb) of the C libraries esegeta links besides
#             libtorch (libnifti2-dev libnifti2-2 libniftiio-dev libznz-dev
#             libznz3 libcjson-dev libcjson1 libpng-dev libpng16-16
#             libzstd-dev libzstd1 zlib1g-dev, and zstd / make when missing),
#             fetched elsewhere with apt-get download: unpacked with dpkg -x
#             into $BUILD/deps (never into /), used through -I / -L / rpath
#             and LD_LIBRARY_PATH.
# Environment: TORCH_PREFIX (default: the directory of $PYTHON's torch, with
# include/ and lib/), BUILD (default build-cuda), PYTHON (default python3), JOBS
# (default nproc), LOG_DIR (default $BUILD; the logs: build.log, cuda.tap).
# Runs from the repository root.  Exit status: 0 when it built and every
# check passed (or was skipped: no GPU).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$BUILD}
DEBS=${1:-}
mkdir -p "$BUILD" "$LOG_DIR"
BUILD_ABS=$(cd "$BUILD" && pwd)
t0=$(date +%s)
say() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

TORCH=${TORCH_PREFIX:-$($PYTHON -c 'import torch, os; print(os.path.dirname(torch.__file__))')} || {
	echo "no torch in $PYTHON"; exit 1; }
ABI=$($PYTHON -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
say "torch $($PYTHON -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda,
	"available", torch.cuda.is_available())') at $TORCH, C++11 ABI $ABI"
command -v nvidia-smi >/dev/null && nvidia-smi -L
g++ --version | head -1

CF="" LF=""
if [ -n "$DEBS" ]; then
	P=$BUILD_ABS/deps
	rm -rf "$P" && mkdir -p "$P"
	for f in "$DEBS"/*.deb; do dpkg -x "$f" "$P"; done
	L=$P/usr/lib/x86_64-linux-gnu
	# zlib1g-dev's libz.so points at /lib/.../libz.so.1.2.13: use the system's
	if [ ! -e "$L/libz.so" ]; then
		z=$(ldconfig -p | awk '/libz\.so\.1 /{ print $NF; exit }')
		ln -sf "$z" "$L/libz.so"
	fi
	CF="-I$P/usr/include -I$P/usr/include/nifti"
	LF="-L$L -Wl,-rpath,$L"
	# libnifti2's own RUNPATH ($ORIGIN/../lib) hides the tools' rpath when
	# the loader looks for its libznz: the prefix goes on LD_LIBRARY_PATH
	# (tools of this build need it there too)
	export LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	command -v zstd >/dev/null || export PATH="$PATH:$P/usr/bin"
	command -v make >/dev/null || export PATH="$PATH:$P/usr/bin"
fi

say "make -j$JOBS TORCH_PREFIX=$TORCH"
if ! make -j"$JOBS" BUILD="$BUILD" TORCH_PREFIX="$TORCH" PYTHON="$PYTHON" \
	CFLAGS="$CF" CXXFLAGS="-D_GLIBCXX_USE_CXX11_ABI=$ABI" LDFLAGS="$LF" all \
	>"$LOG_DIR/build.log" 2>&1; then
	grep -E 'error|Error' "$LOG_DIR/build.log" | head -40
	tail -20 "$LOG_DIR/build.log"
	say "build FAILED"
	exit 1
fi
grep -iE 'warning' "$LOG_DIR/build.log" | head -10
say "built"
ldd "$BUILD/bin/esg-attr" | grep -E 'torch|c10|nifti|cjson|png|zstd'

say "tests/cli/cuda.sh"
BUILD=$BUILD PYTHON=$PYTHON ESG_BIN=$BUILD_ABS/bin ESG_ROOT=$PWD bash tests/cli/cuda.sh \
	| tee "$LOG_DIR/cuda.tap"
rc=${PIPESTATUS[0]}
say "cuda.sh exit $rc: $(grep -c '^ok' "$LOG_DIR/cuda.tap") ok, $(grep -c '^not ok' "$LOG_DIR/cuda.tap") not ok"
exit "$rc"
