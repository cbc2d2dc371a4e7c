#!/usr/bin/env bash
# Desktop integration for Linux: menu entry (.desktop) + icon, per user or system-wide.
#
#   installer/linux/install.sh [--user | --system] [--bundle DIR | --exec CMD] [--uninstall]
#
# --user     (default) ~/.local/share/applications, ~/.local/share/icons/hicolor/..., a bundle
#            goes to ~/.local/opt/breakfix-screening with a link in ~/.local/bin
# --system   /usr/share/applications, /usr/share/icons/hicolor/..., a bundle goes to
#            /opt/breakfix-screening with a link in /usr/local/bin (run as root; DESTDIR=... stages it)
# --bundle DIR   install the PyInstaller screening bundle DIR (dist/breakfix-screening) too, and
#                make the menu entry start it
# --exec CMD     what the menu entry starts (default: breakfix-desktop on PATH, e.g. a wheelhouse
#                venv's bin/breakfix-desktop; give its absolute path when it is not on PATH)
# --uninstall    remove what this script installs (in the chosen mode)
#
# The script and the .desktop template also travel inside the bundle
# (breakfix-screening/_internal/installer/linux/); run from there, --bundle defaults to that bundle.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# a checkout: installer/linux -> resources/; a bundle: _internal/installer/linux -> _internal/resources/
ICONS="$(cd "$HERE/../.." && pwd)/resources/icons"
die() { echo "error: $*" >&2; exit 1; }

APP_ID=breakfix-desktop
BUNDLE_NAME=breakfix-screening
mode=user
bundle=""
exec_cmd=""
uninstall=0
while [ $# -gt 0 ]; do
    case "$1" in
        --user) mode=user; shift ;;
        --system) mode=system; shift ;;
        --bundle) [ $# -ge 2 ] || die "--bundle needs a folder"; bundle="$2"; shift 2 ;;
        --exec) [ $# -ge 2 ] || die "--exec needs a command"; exec_cmd="$2"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -z "$bundle" ] || [ -z "$exec_cmd" ] || die "--bundle and --exec exclude each other"
if [ "$uninstall" = 0 ] && [ -z "$bundle$exec_cmd" ] && [ -x "$HERE/../../../$BUNDLE_NAME" ]; then
    bundle="$(cd "$HERE/../../.." && pwd)"  # run from inside a bundle: install that bundle
fi

if [ "$mode" = system ]; then
    root="${DESTDIR:-}"
    share="$root/usr/share"
    opt="$root/opt"
    bin="$root/usr/local/bin"
    [ -n "$root" ] || [ "$(id -u)" = 0 ] || die "--system needs root (or DESTDIR=... to stage the files)"
else
    share="${XDG_DATA_HOME:-$HOME/.local/share}"
    opt="$HOME/.local/opt"
    bin="$HOME/.local/bin"
fi
desktop_file="$share/applications/$APP_ID.desktop"
icon_svg="$share/icons/hicolor/scalable/apps/$APP_ID.svg"
icon_png="$share/icons/hicolor/256x256/apps/$APP_ID.png"
bundle_dir="$opt/$BUNDLE_NAME"
bundle_link="$bin/$BUNDLE_NAME"

refresh_caches() {
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$share/applications" 2>/dev/null || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$share/icons/hicolor" 2>/dev/null || true
}

if [ "$uninstall" = 1 ]; then
    rm -f "$desktop_file" "$icon_svg" "$icon_png"
    if [ -L "$bundle_link" ] && [ "$(readlink "$bundle_link")" = "$bundle_dir/$BUNDLE_NAME" ]; then rm -f "$bundle_link"; fi
    if [ -x "$bundle_dir/$BUNDLE_NAME" ]; then rm -rf "$bundle_dir"; fi
    refresh_caches
    echo "removed ($mode): the menu entry, the icons and the bundle in $bundle_dir (if this script installed it)"
    exit 0
fi

if [ -n "$bundle" ]; then
    [ -x "$bundle/$BUNDLE_NAME" ] || die "$bundle is not a screening bundle (no $BUNDLE_NAME executable; build it with make bundle)"
    echo "== installing the bundle into $bundle_dir"
    mkdir -p "$opt" "$bin"
    rm -rf "$bundle_dir.new"
    cp -a "$bundle" "$bundle_dir.new"
    rm -rf "$bundle_dir"
    mv "$bundle_dir.new" "$bundle_dir"
    ln -sfn "$bundle_dir/$BUNDLE_NAME" "$bundle_link"
    exec_cmd="${bundle_dir#"${DESTDIR:-}"}/$BUNDLE_NAME"
elif [ -z "$exec_cmd" ]; then
    exec_cmd="$(command -v "$APP_ID" || true)"
    [ -n "$exec_cmd" ] || { echo "note: $APP_ID is not on PATH; the menu entry runs '$APP_ID' (use --exec PATH)"; exec_cmd="$APP_ID"; }
fi

echo "== menu entry $desktop_file (Exec=$exec_cmd)"
mkdir -p "$(dirname "$desktop_file")" "$(dirname "$icon_svg")" "$(dirname "$icon_png")"
quoted="$exec_cmd"
case "$exec_cmd" in *" "*) quoted="\"$exec_cmd\"" ;; esac
sed -e "s|^Exec=.*|Exec=$quoted|" -e "s|^TryExec=.*|TryExec=$exec_cmd|" "$HERE/$APP_ID.desktop" > "$desktop_file"
chmod 644 "$desktop_file"
[ -f "$ICONS/breakfix.svg" ] || die "$ICONS/breakfix.svg not found"
install -m 644 "$ICONS/breakfix.svg" "$icon_svg"
if [ -f "$ICONS/breakfix.png" ]; then install -m 644 "$ICONS/breakfix.png" "$icon_png"; fi
if command -v desktop-file-validate >/dev/null 2>&1; then desktop-file-validate "$desktop_file"; fi
refresh_caches
echo "installed ($mode): $desktop_file, $icon_svg${bundle:+, $bundle_dir}"
