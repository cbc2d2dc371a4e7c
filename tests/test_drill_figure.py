"""The offline figure tool: drill report.json curves -> publication-style PNG / SVG (pyqtgraph, offscreen)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breakfix_desktop.core.drills import ROLE_COLORS
from breakfix_desktop.tools import drill_figure as DF

REPO = Path(__file__).resolve().parents[1]
EPOCHS = [1, 2, 3, 4, 5, 6]


def _curve(series, role, param, base, step):
    acc = [round(min(0.98, base + step * i), 3) for i in range(len(EPOCHS))]
    return {"series": series, "role": role, "param": param, "epoch": EPOCHS, "test_acc": acc,
            "train_acc": [min(1.0, a + 0.03) for a in acc], "val_acc": acc}


def fig6_report() -> dict:
    attacked = _curve("drunk s=3", "attacked", {"scale_strength": 3.0}, 0.25, 0.01)
    attacked["test_acc"][2] = None  # a missing value: skipped
    return {"format": "breakfix-drill-report/1", "drill": "fig6-drunk-curves", "title": "Figure 6: drunk curves",
            "figure": {"title": "Accuracy over epochs (test split)", "x": "epoch", "y": "test_acc",
                       "y_label": "test accuracy"},
            "curves": [_curve("clean", "clean", None, 0.55, 0.07), attacked,
                       _curve("defended", "defended", None, 0.5, 0.07)]}


def fig5_report() -> dict:
    return {"format": "breakfix-drill-report/1", "drill": "fig5-drunk-sweep", "title": "Figure 5",
            "curves": [_curve(f"s = {s:g}", "sweep", {"scale_strength": s}, 0.3, 0.1 / (1 + s))
                       for s in (5.0, 0.0, 1.0, 3.0)]}


def write(tmp_path: Path, name: str, report) -> Path:
    path = tmp_path / name
    path.write_text(report if isinstance(report, str) else json.dumps(report), encoding="utf-8")
    return path


def colours_of(png: Path) -> set:
    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return {"#%02x%02x%02x" % tuple(int(v) for v in px) for px in np.unique(rgb, axis=0)}


def test_png_has_the_size_asked_for_and_the_role_colours(qapp, tmp_path):
    report = write(tmp_path, "report.json", fig6_report())
    out = DF.render_figure([report], tmp_path / "fig" / "fig6.png", width=777, height=433)
    assert out == tmp_path / "fig" / "fig6.png" and out.read_bytes()[:4] == b"\x89PNG"
    img = Image.open(out).convert("RGB")
    assert img.size == (777, 433)
    arr = np.asarray(img)
    assert (arr[2, 2] == 255).all() and (arr[-3, -3] == 255).all()  # white background
    colours = colours_of(out)
    assert len(colours) > 20  # text, axes, antialiased lines: not blank
    for role in ("clean", "attacked", "defended"):
        assert ROLE_COLORS[role] in colours, role


def test_series_skip_nulls_order_sweeps_and_prefix_colliding_names(tmp_path):
    series, _ = DF.collect_series([fig6_report()], "test_acc")
    attacked = next(s for s in series if s.role == "attacked")
    assert attacked.x == [1, 2, 4, 5, 6] and len(attacked.y) == 5
    sweep, _ = DF.collect_series([fig5_report()])
    assert [s.name for s in DF._ordered(sweep)] == ["s = 0", "s = 1", "s = 3", "s = 5"]
    assert sorted(s.sweep_value for s in sweep) == [0.0, 1.0, 3.0, 5.0]
    colours = [c.name() for c in DF._colours(DF._ordered(sweep))]
    assert len(set(colours)) == 4 and not set(colours) & set(ROLE_COLORS.values())
    both, _ = DF.collect_series([fig6_report(), fig6_report() | {"drill": "again"}])
    assert "fig6-drunk-curves: clean" in [s.name for s in both] and "again: clean" in [s.name for s in both]
    assert DF._epoch_ticks(1, 6) == [(float(v), str(v)) for v in range(1, 7)]
    assert [label for _, label in DF._epoch_ticks(0, 60)][:3] == ["0", "5", "10"]


def test_sweep_family_and_svg(qapp, tmp_path):
    report = write(tmp_path, "sweep.json", fig5_report())
    png = DF.render_figure([report], tmp_path / "fig5.png", title="Sweep")
    assert Image.open(png).size == (900, 540)
    svg = DF.render_figure([report, write(tmp_path, "fig6.json", fig6_report())], tmp_path / "both.svg",
                           metric="train_acc")
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "viewBox=\"0 0 900 540\"" in text and len(text) > 5000
    assert "training accuracy" in text or "training" in text


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ({"drill": "fig6-x", "title": "no curves"}, "no 'curves'"),
    ({"curves": []}, "no 'curves'"),
    ([1, 2], "JSON object"),
])
def test_bad_report_errors_name_the_file(qapp, tmp_path, content, needle):
    path = write(tmp_path, "bad.json", content)
    with pytest.raises(DF.FigureError, match=needle) as info:
        DF.render_figure([path], tmp_path / "x.png")
    assert str(path) in str(info.value)
    assert not (tmp_path / "x.png").exists()


def test_cli_writes_the_figure_and_exits_2_on_a_bad_report(tmp_path, capsys):
    report = write(tmp_path, "report.json", fig6_report())
    assert DF.main([str(report), "--out", str(tmp_path / "f.png"), "--width", "640", "--height", "400"]) == 0
    assert Image.open(tmp_path / "f.png").size == (640, 400)
    bad = write(tmp_path, "broken.json", "{")
    assert DF.main([str(report), str(bad), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid JSON" in err and not (tmp_path / "g.png").exists()
    assert DF.main([str(report), "--out", str(tmp_path / "g.pdf")]) == 2


def test_module_runs_offscreen_without_torch(tmp_path):
    report = write(tmp_path, "report.json", fig6_report())
    code = ("import runpy, sys; sys.modules['torch'] = None; "  # any torch import would fail
            "sys.argv = ['drill_figure', sys.argv[1], '--out', sys.argv[2]]; "
            "runpy.run_module('breakfix_desktop.tools.drill_figure', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(report), str(tmp_path / "f.svg")], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
