#!/usr/bin/env bash
# Install BreakFix Desktop from a wheelhouse (installer/make_wheelhouse.sh) with no network at all:
# pip install --no-index --find-links WHEELHOUSE.
#
#   install_from_wheelhouse.sh WHEELHOUSE [--screening-only] [--venv DIR] [--no-self-test]
#
# --screening-only  the screening app only (onnxruntime, no torch); default: the full install
#                   with the training extra and the dev tools (python -m training, tests)
# --venv DIR        where to create the virtual environment (default: ~/.local/share/breakfix-desktop/venv)
# --no-self-test    skip `breakfix-desktop --self-test` at the end
# Environment: PYTHON (default python3; must match the wheelhouse's Python version, >= 3.11).
#
# Afterwards: DIR/bin/breakfix-desktop (GUI), DIR/bin/breakfix-desktop --self-test, and with the
# full install DIR/bin/python -m training.  installer/linux/install.sh adds the menu entry.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }

wheelhouse=""
screening_only=0
venv="${XDG_DATA_HOME:-$HOME/.local/share}/breakfix-desktop/venv"
self_test=1
while [ $# -gt 0 ]; do
    case "$1" in
        --screening-only) screening_only=1; shift ;;
        --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv="$2"; shift 2 ;;
        --no-self-test) self_test=0; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$wheelhouse" ] || die "one WHEELHOUSE only"; wheelhouse="$1"; shift ;;
    esac
done
[ -n "$wheelhouse" ] || die "usage: $0 WHEELHOUSE [--screening-only] [--venv DIR] [--no-self-test]"
[ -d "$wheelhouse" ] || die "$wheelhouse: no such folder"
wheelhouse="$(cd "$wheelhouse" && pwd)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Python >= 3.11 is required)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'

project=""
for f in "$wheelhouse"/breakfix_desktop-*.whl; do [ -f "$f" ] && { [ -z "$project" ] || [ "$f" -nt "$project" ]; } && project="$f"; done
[ -n "$project" ] || die "$wheelhouse holds no breakfix_desktop-*.whl (made by make_wheelhouse.sh?)"
if [ -f "$wheelhouse/SHA256SUMS" ]; then
    echo "== checking the wheels' SHA-256 (SHA256SUMS)"
    (cd "$wheelhouse" && sha256sum --quiet -c SHA256SUMS) || die "a wheel does not match SHA256SUMS"
fi

# Only the wheelhouse: no index, no other find-links, no constraint file from the environment.
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_REQUIREMENT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONFIG_FILE=/dev/null
offline=(--no-index --find-links "$wheelhouse")
constraints=()
[ -f "$wheelhouse/constraints.txt" ] && constraints=(-c "$wheelhouse/constraints.txt")

echo "== creating $venv"
"$PYTHON" -m venv "$venv"
pip_wheel=""
for f in "$wheelhouse"/pip-*.whl; do [ -f "$f" ] && pip_wheel="$f"; done
if [ -n "$pip_wheel" ]; then
    "$venv/bin/python" -m pip install -q "${offline[@]}" "$pip_wheel"
fi
if [ "$screening_only" = 1 ]; then
    target="$project"
    echo "== installing the screening app (no extras) from $wheelhouse"
else
    target="$project[train,dev]"
    echo "== installing the full app (training extra + dev tools) from $wheelhouse"
fi
"$venv/bin/python" -m pip install "${offline[@]}" "${constraints[@]+"${constraints[@]}"}" "$target"
"$venv/bin/python" -m pip check

if [ "$self_test" = 1 ]; then
    echo "== breakfix-desktop --self-test"
    QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$venv/bin/breakfix-desktop" --self-test \
        || die "the self-test failed (the app is installed in $venv, but do not use it until this is fixed)"
fi
echo "installed: $venv/bin/breakfix-desktop"
