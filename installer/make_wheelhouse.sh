#!/usr/bin/env bash
# Gather every pinned wheel of the FULL install (screening + training extra + dev tools, i.e. the
# whole of requirements/lock.txt) plus the project's own wheel into one folder, for machines
# without internet.  Install there with installer/install_from_wheelhouse.sh.
#
#   installer/make_wheelhouse.sh [--platform TAG] [--python-version X.Y] [--screening-only] OUT_DIR
#   make wheelhouse [WHEELHOUSE=wheelhouse] [WHEELHOUSE_ARGS="--platform manylinux_2_34_x86_64 --python-version 3.11"]
#
# --platform TAG        target platform (repeatable), e.g. manylinux_2_34_x86_64 (glibc >= 2.34, the
#                       oldest PySide6 6.11 runs on) or win_amd64; older manylinux_2_NN tags are added
#                       for a manylinux_2_NN tag.  Default: this machine's.
# --python-version X.Y  target Python (default: the running python3's).  With --platform the ABI is cpXY.
# --screening-only      only the screening set (the project without extras): a few hundred MB
#                       instead of several GB (torch and the CUDA libraries of the training extra).
#
# OUT_DIR gets: *.whl, constraints.txt (a copy of requirements/lock.txt), the install script and
# SHA256SUMS.  Only binary wheels are taken (--only-binary=:all:): nothing is compiled on the target.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=installer/common.sh
. "$REPO/installer/common.sh"

PYTHON="${PYTHON:-python3}"
platforms=()
pyver=""
screening_only=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --platform) [ $# -ge 2 ] || die "--platform needs a tag"; platforms+=("$2"); shift 2 ;;
        --python-version) [ $# -ge 2 ] || die "--python-version needs X.Y"; pyver="$2"; shift 2 ;;
        --screening-only) screening_only=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$out" ] || die "one OUT_DIR only"; out="$1"; shift ;;
    esac
done
[ -n "$out" ] || die "usage: $0 [--platform TAG] [--python-version X.Y] [--screening-only] OUT_DIR"
check_python "$PYTHON"
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_CONSTRAINT  # the Makefile exports it; -c is passed explicitly below
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)

target=()
for p in "${platforms[@]+"${platforms[@]}"}"; do
    target+=(--platform "$p")
    # pip does not widen manylinux_2_NN to the older glibc tags a newer glibc also runs: do it here
    if [[ "$p" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
        for ((v = BASH_REMATCH[1] - 1; v >= 17; v--)); do target+=(--platform "manylinux_2_${v}_${BASH_REMATCH[2]}"); done
        target+=(--platform "manylinux2014_${BASH_REMATCH[2]}")
    fi
done
if [ -n "$pyver" ]; then
    target+=(--python-version "$pyver")
    if [ ${#platforms[@]} -gt 0 ]; then target+=(--implementation cp --abi "cp${pyver/./}"); fi
fi

echo "== the project's wheel"
wheel="$(PY="$PYTHON" project_wheel "$out")"
echo "$wheel"

echo "== pinned wheels ($([ "$screening_only" = 1 ] && echo "screening set" || echo "full lock: screening + train + dev"))"
if [ "$screening_only" = 1 ]; then
    # the project's own dependencies (no extras), resolved against the pins
    reqs=("$wheel")
else
    reqs=("$wheel[train,dev]")
    # the whole lock too (it is a Linux freeze: triton and the nvidia-* wheels exist only there)
    case "${platforms[*]:-linux}" in *linux*) reqs=(-r "$LOCK" "${reqs[@]}") ;; esac
fi
"$PYTHON" -m pip download --only-binary=:all: -c "$LOCK" "${target[@]+"${target[@]}"}" -d "$out" \
    "pip==$PIP_VERSION" "${reqs[@]}"

cp "$LOCK" "$out/constraints.txt"
cp "$REPO/installer/install_from_wheelhouse.sh" "$out/"
(cd "$out" && sha256sum ./*.whl > SHA256SUMS)
end=$(date +%s)
echo "== wheelhouse $out: $(ls "$out"/*.whl | wc -l) wheels, $(du -sh "$out" | cut -f1), $((end - start)) s"
echo "install on the target (Python ${pyver:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}):"
echo "  $out/install_from_wheelhouse.sh $out [--screening-only] [--venv DIR]"
