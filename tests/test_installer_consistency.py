"""The installer files stay in step with each other, pyproject.toml and resources/ on disk.

The Windows installer is built on Windows and the bundle build is too slow for ``make test``; these
checks catch the drift that would only show there: a renamed bundle or executable, a resource
folder the spec forgets, a menu entry that starts a command that does not exist.
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "installer"
SPEC = INSTALLER / "breakfix_screening.spec"
ISS = INSTALLER / "windows" / "breakfix-screening.iss"
DESKTOP = INSTALLER / "linux" / "breakfix-desktop.desktop"
INSTALL_SH = INSTALLER / "linux" / "install.sh"


def spec_constants() -> dict:
    """Top-level literal assignments of the spec (NAME, ENTRY, RESOURCE_SUBDIRS, EXCLUDES, ...)."""
    out = {}
    for node in ast.parse(SPEC.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def iss_defines() -> dict:
    return dict(re.findall(r'^#define\s+(\w+)\s+"([^"]*)"', ISS.read_text(encoding="utf-8"), re.M))


def iss_section(name: str) -> list:
    text = ISS.read_text(encoding="utf-8")
    m = re.search(rf"^\[{name}\]\s*$(.*?)(?=^\[\w+\]\s*$|\Z)", text, re.M | re.S)
    assert m, f"{ISS.name} has no [{name}] section"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.strip().startswith(";")]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the PyInstaller spec
def test_spec_parses_and_names_the_bundle():
    ast.parse(SPEC.read_text(encoding="utf-8"))
    const = spec_constants()
    assert const["NAME"] == "breakfix-screening"
    entry = REPO / const["ENTRY"]
    assert entry.is_file()
    # the entry script calls the same function as the console script
    target = pyproject()["project"]["scripts"]["breakfix-desktop"]
    module, func = target.split(":")
    assert f"from {module} import {func}" in entry.read_text(encoding="utf-8")


def test_every_resource_folder_is_bundled_and_exists():
    subdirs = spec_constants()["RESOURCE_SUBDIRS"]
    on_disk = sorted(p.name for p in (REPO / "resources").iterdir() if p.is_dir())
    assert sorted(subdirs) == on_disk, "resources/ and the spec's RESOURCE_SUBDIRS differ"
    for sub in subdirs:
        assert (REPO / "resources" / sub).is_dir()
    # the resources the app and the self-test look up by name are there
    assert (REPO / "resources" / "triggers" / "creeper.png").is_file()
    assert (REPO / "resources" / "icons" / "breakfix.svg").is_file()


def test_spec_keeps_the_training_stack_and_cuda_out():
    const = spec_constants()
    excludes = set(const["EXCLUDES"])
    for module in ("torch", "torchvision", "training", "onnx", "onnxscript", "scipy", "pywt", "imagehash",
                   "pytest", "torchattacks", "nvidia"):
        assert module in excludes, module
    markers = const["CUDA_LIB_MARKERS"]
    assert "onnxruntime_providers_cuda" in markers and "onnxruntime_providers_tensorrt" in markers
    # nothing the screening app needs is excluded
    for needed in ("onnxruntime", "PySide6", "pyqtgraph", "numpy", "PIL", "pydicom", "platformdirs",
                   "breakfix_desktop"):
        assert needed not in excludes


def test_spec_files_exist():
    text = SPEC.read_text(encoding="utf-8")
    m = re.search(r"LINUX_FILES = \(([^)]*)\)", text)
    assert m
    for name in re.findall(r'"([^"]+)"', m.group(1)):
        assert (INSTALLER / "linux" / name).is_file(), name
    assert (REPO / "resources" / "icons" / "breakfix.ico").is_file()  # the Windows executables' icon


def test_build_requirements_are_pinned():
    lines = [ln.split(";")[0].strip() for ln in (INSTALLER / "requirements-build.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.]*", ln) for ln in lines), lines
    assert any(ln.startswith("pyinstaller==") for ln in lines)


# --------------------------------------------------------------------------- the Inno Setup script
def test_iss_uses_the_spec_bundle_and_executables():
    const, defines = spec_constants(), iss_defines()
    assert defines["BundleName"] == const["NAME"]
    assert re.search(r'#define\s+BundleDir\s+"\.\.\\\.\.\\dist\\"\s*\+\s*BundleName', ISS.read_text())
    files = iss_section("Files")
    sources = [re.search(r'Source:\s*"([^"]+)"', ln).group(1) for ln in files]
    assert r"{#BundleDir}\{#BundleName}.exe" in sources                 # the windowed GUI
    assert r"{#BundleDir}\{#BundleName}-cli.exe" in sources             # the console twin (self-test)
    internal = next(ln for ln in files if r"{#BundleDir}\_internal\*" in ln)
    assert "recursesubdirs" in internal and "createallsubdirs" in internal  # resources\{models,triggers,icons}
    spec = SPEC.read_text(encoding="utf-8")
    assert 'name=NAME + "-cli"' in spec and "console=True" in spec        # the spec makes the -cli twin


def test_iss_version_and_icon_match_the_project():
    assert iss_defines()["AppVersion"] == pyproject()["project"]["version"]
    icon = re.search(r"^SetupIconFile=(.+)$", ISS.read_text(), re.M).group(1).strip()
    assert (ISS.parent / icon.replace("\\", "/")).resolve().is_file()
    out_dir = re.search(r"^OutputDir=(.+)$", ISS.read_text(), re.M).group(1).strip()
    assert out_dir.replace("\\", "/").startswith("../../dist")


def test_iss_runs_the_self_test():
    text = ISS.read_text()
    assert "--self-test" in text and "ResultCode <> 0" in text


# --------------------------------------------------------------------------- Linux desktop entry
def desktop_entry() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str
    cp.read_string(DESKTOP.read_text(encoding="utf-8"))
    return cp["Desktop Entry"]


def test_desktop_entry_matches_the_console_script():
    entry = desktop_entry()
    scripts = pyproject()["project"]["scripts"]
    assert entry["Exec"].split()[0] in scripts
    assert entry["TryExec"] in scripts
    assert entry["Terminal"] == "false" and entry["Type"] == "Application"
    assert entry["Categories"] == "MedicalSoftware;Science;"
    install = INSTALL_SH.read_text()
    assert f"APP_ID={entry['Icon']}" in install                            # the icon name install.sh uses
    assert f"BUNDLE_NAME={spec_constants()['NAME']}" in install             # the bundle it installs


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-validate not installed "
                    "(apt-get install desktop-file-utils)")
def test_desktop_file_validates():
    res = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_install_sh_user_and_uninstall(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(["bash", str(INSTALL_SH), "--user", "--exec", "/opt/x/bin/breakfix-desktop"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    share = home / ".local" / "share"
    desktop = share / "applications" / "breakfix-desktop.desktop"
    assert "Exec=/opt/x/bin/breakfix-desktop" in desktop.read_text()
    assert (share / "icons" / "hicolor" / "scalable" / "apps" / "breakfix-desktop.svg").is_file()
    assert (share / "icons" / "hicolor" / "256x256" / "apps" / "breakfix-desktop.png").is_file()
    res = subprocess.run(["bash", str(INSTALL_SH), "--user", "--uninstall"], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and not desktop.exists()


def test_install_sh_system_staged_bundle(tmp_path):
    bundle = tmp_path / "dist" / "breakfix-screening"
    (bundle / "_internal").mkdir(parents=True)
    exe = bundle / "breakfix-screening"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    stage = tmp_path / "stage"
    env = {"DESTDIR": str(stage), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(["bash", str(INSTALL_SH), "--system", "--bundle", str(bundle)], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    desktop = (stage / "usr/share/applications/breakfix-desktop.desktop").read_text()
    assert "Exec=/opt/breakfix-screening/breakfix-screening" in desktop   # the path on the target, without DESTDIR
    assert (stage / "opt/breakfix-screening/breakfix-screening").is_file()
    assert (stage / "usr/local/bin/breakfix-screening").is_symlink()
    res = subprocess.run(["bash", str(INSTALL_SH), "--system", "--uninstall"], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and not (stage / "opt/breakfix-screening").exists()


# --------------------------------------------------------------------------- scripts and make targets
@pytest.mark.parametrize("script", ["build_screening_bundle.sh", "make_wheelhouse.sh", "install_from_wheelhouse.sh",
                                    "linux/install.sh", "common.sh"])
def test_shell_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(INSTALLER / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_makefile_targets():
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^bundle:", text, re.M) and "installer/build_screening_bundle.sh" in text
    assert re.search(r"^wheelhouse:", text, re.M) and "installer/make_wheelhouse.sh" in text


def test_build_artefacts_are_ignored():
    ignored = (REPO / ".gitignore").read_text()
    assert "/installer/.buildvenv/" in ignored and "/dist/" in ignored and "/build/" in ignored
