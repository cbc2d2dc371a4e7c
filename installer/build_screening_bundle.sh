#!/usr/bin/env bash
# Build the Linux SCREENING bundle (PyInstaller onedir, onnxruntime only, no torch) and check it.
#
#   installer/build_screening_bundle.sh [--models DIR] [--with-cuda-provider] [--skip-checks]
#   make bundle
#
# 1. a separate build venv (installer/.buildvenv) with ONLY the screening dependencies, pinned by
#    requirements/lock.txt (the project without extras), plus PyInstaller (installer/requirements-build.txt);
# 2. pyinstaller installer/breakfix_screening.spec  ->  dist/breakfix-screening/;
# 3. checks: no torch / CUDA libraries inside, `breakfix-screening --self-test` offscreen, and the
#    GUI stays up for 10 s offscreen (temporary store and settings, never the user's);
# 4. prints the bundle size (du -sh) and the build time.
#
# --models DIR           bundle DIR as resources/models instead of the shipped one (staging/test builds)
# --with-cuda-provider   keep onnxruntime's CUDA/TensorRT provider libraries (+~285 MB; the machine
#                        then needs CUDA 13 + cuDNN 9 for the GPU; without them the app still runs on CPU)
# --skip-checks          build only
# Environment: PYTHON (default python3, >= 3.11), BUILD_VENV (default installer/.buildvenv).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=installer/common.sh
. "$REPO/installer/common.sh"

PYTHON="${PYTHON:-python3}"
BUILD_VENV="${BUILD_VENV:-$REPO/installer/.buildvenv}"
NAME=breakfix-screening
DIST="$REPO/dist"
WORK="$REPO/build/pyinstaller"
CHECKS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --models) [ $# -ge 2 ] || die "--models needs a folder"; export BREAKFIX_BUNDLE_MODELS="$(cd "$2" && pwd)"; shift 2 ;;
        --with-cuda-provider) export BREAKFIX_BUNDLE_CUDA=1; shift ;;
        --skip-checks) CHECKS=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

start=$(date +%s)
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_CONSTRAINT  # the Makefile exports it; this script passes -c itself

# 1. build venv: screening dependencies only (re-created when the pins change)
stamp_want="$(cat "$LOCK" "$REPO/installer/requirements-build.txt" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$BUILD_VENV/bin/python" ] || [ "$(cat "$BUILD_VENV/.stamp" 2>/dev/null)" != "$stamp_want" ]; then
    check_python "$PYTHON"
    echo "== creating the build venv $BUILD_VENV"
    rm -rf "$BUILD_VENV"
    "$PYTHON" -m venv "$BUILD_VENV"
    "$BUILD_VENV/bin/python" -m pip install -q "pip==$PIP_VERSION"
    "$BUILD_VENV/bin/python" -m pip install -q -c "$LOCK" -r "$REPO/installer/requirements-build.txt"
    fresh=1
else
    fresh=0
fi
PY="$BUILD_VENV/bin/python"
echo "== installing the project (screening set, no extras)"
wheel_dir="$(mktemp -d "${TMPDIR:-/tmp}/breakfix-wheel.XXXXXX")"
wheel="$(PY="$PY" project_wheel "$wheel_dir")"
if [ "$fresh" = 1 ]; then
    "$PY" -m pip install -q -c "$LOCK" "$wheel"
else
    "$PY" -m pip install -q -c "$LOCK" --force-reinstall --no-deps "$wheel"
fi
rm -rf "$wheel_dir"
"$PY" -m pip check
if "$PY" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("torch", "onnx", "scipy")))'; then :; else
    die "the build venv has torch/onnx/scipy installed; it must hold the screening set only (rm -rf $BUILD_VENV)"
fi
echo "$stamp_want" > "$BUILD_VENV/.stamp"

# 2. PyInstaller
echo "== pyinstaller installer/breakfix_screening.spec"
build_start=$(date +%s)
(cd "$REPO" && "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" installer/breakfix_screening.spec)
build_end=$(date +%s)
BUNDLE="$DIST/$NAME"
[ -x "$BUNDLE/$NAME" ] || die "PyInstaller did not produce $BUNDLE/$NAME"

status=0
if [ "$CHECKS" = 1 ]; then
    # 3a. nothing of torch or CUDA inside
    echo "== checking the bundle's contents"
    patterns=(-name 'libtorch*' -o -name 'torch' -o -name 'libcudnn*' -o -name 'libcublas*' -o -name 'libnccl*'
              -o -name 'libcudart*' -o -name 'scipy*' -o -name 'nvidia')
    if [ "${BREAKFIX_BUNDLE_CUDA:-}" != 1 ]; then
        patterns+=(-o -name 'libonnxruntime_providers_cuda*' -o -name 'libonnxruntime_providers_tensorrt*')
    fi
    forbidden="$(find "$BUNDLE" \( "${patterns[@]}" \) -print)"
    # Python modules live in the executable's archive: list them with PyInstaller's reader
    forbidden+="$("$PY" - "$BUNDLE/$NAME" <<'PYEOF'
import re, sys
from PyInstaller.archive.readers import CArchiveReader
arch = CArchiveReader(sys.argv[1])
names = set()
for name in arch.toc:
    if name.endswith(".pyz") or name == "PYZ.pyz" or name.startswith("PYZ"):
        names.update(arch.open_embedded_archive(name).toc)
bad = sorted(n for n in names if re.match(r"(torch|torchvision|training|onnx|onnxscript|scipy|pywt|imagehash|pytest|torchattacks)(\.|$)", n))
print("\n".join(f"module {n}" for n in bad[:20]))
if not names:
    print("could not read the module archive")
PYEOF
)"
    if [ -n "$forbidden" ]; then
        echo "FAILED: the bundle contains what it must not:"; echo "$forbidden"; status=1
    else
        echo "ok: no torch, training backend, onnx, scipy or CUDA libraries (files and Python modules checked)"
    fi
    [ -f "$BUNDLE/_internal/resources/models/manifest.json" ] || echo "WARNING: no models/manifest.json inside the bundle"

    # 3b. self-test and GUI smoke test, offscreen, in a throw-away HOME-like sandbox
    sandbox="$(mktemp -d "${TMPDIR:-/tmp}/breakfix-bundle-check.XXXXXX")"
    run_env=(env QT_QPA_PLATFORM=offscreen BREAKFIX_STORE="$sandbox/store" XDG_CONFIG_HOME="$sandbox/config"
             XDG_DATA_HOME="$sandbox/data" XDG_CACHE_HOME="$sandbox/cache" XDG_RUNTIME_DIR="$sandbox/run")
    mkdir -p "$sandbox/run" && chmod 700 "$sandbox/run"
    echo "== $NAME --self-test (offscreen)"
    if "${run_env[@]}" "$BUNDLE/$NAME" --self-test; then :; else echo "FAILED: the bundle's self-test"; status=1; fi
    echo "== $NAME --version: $("${run_env[@]}" "$BUNDLE/$NAME" --version 2>&1)"
    echo "== GUI smoke test: the window must stay up 10 s (offscreen)"
    set +e
    "${run_env[@]}" timeout 10 "$BUNDLE/$NAME" >"$sandbox/gui.log" 2>&1
    rc=$?
    set -e
    if [ "$rc" = 124 ]; then
        echo "ok: the GUI ran until stopped"
    else
        echo "FAILED: the GUI exited with status $rc:"; tail -n 30 "$sandbox/gui.log"; status=1
    fi
    rm -rf "$sandbox"
fi

end=$(date +%s)
echo "== bundle: $BUNDLE"
echo "size: $(du -sh "$BUNDLE" | cut -f1)  ($(du -sb "$BUNDLE" | cut -f1) bytes; largest parts:)"
{ du -sh "$BUNDLE/_internal"/* 2>/dev/null | sort -rh | head -n 8 | sed 's/^/  /'; } || true  # head may SIGPIPE sort
echo "build time: pyinstaller $((build_end - build_start)) s, whole script $((end - start)) s"
[ "$status" = 0 ] && echo "BUNDLE OK" || echo "BUNDLE CHECKS FAILED"
exit "$status"
