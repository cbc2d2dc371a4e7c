# Shared by the installer scripts (sourced, not run).  Needs: set -euo pipefail, $REPO.

PIP_VERSION=26.3  # the Makefile's PIP_VERSION
LOCK="$REPO/requirements/lock.txt"

die() { echo "error: $*" >&2; exit 1; }

# check_python PY: PY exists and is >= 3.11
check_python() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (Python >= 3.11 is required; set PYTHON=...)"
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")' \
        || die "$1 is $("$1" -V 2>&1); Python >= 3.11 is required"
}

# project_wheel OUT_DIR: build breakfix_desktop-*.whl (no dependencies) into OUT_DIR and print its path.
# Built from a temporary copy of the tree so setuptools' build/ cache never leaks stale modules
# into the wheel and the checkout stays untouched.  Needs setuptools from the package index
# (or PIP_FIND_LINKS) for the isolated build.
project_wheel() {
    local out="$1" src py="${PY:-python3}"
    src="$(mktemp -d "${TMPDIR:-/tmp}/breakfix-src.XXXXXX")"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # tracked + untracked-but-not-ignored files (so freshly exported models are included)
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
            | tar --null -T - -cf -) | tar -xf - -C "$src"
    else
        tar -C "$REPO" --exclude=./.venv --exclude=./installer/.buildvenv --exclude=./build --exclude=./dist \
            --exclude=./runs --exclude='*.egg-info' -cf - . | tar -xf - -C "$src"
    fi
    mkdir -p "$out"
    "$py" -m pip wheel -q --no-deps --wheel-dir "$out" "$src" >&2
    rm -rf "$src"
    local newest="" f
    for f in "$out"/breakfix_desktop-*.whl; do [ -z "$newest" ] || [ "$f" -nt "$newest" ] && newest="$f"; done
    [ -n "$newest" ] && [ -f "$newest" ] || die "pip wheel made no breakfix_desktop wheel in $out"
    echo "$newest"
}
