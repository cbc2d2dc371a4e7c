"""The versioned JSON-lines protocol shared by backend and GUI (stdlib only)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import pytest

from breakfix_desktop.core import protocol as proto


def test_roundtrip_every_type():
    samples = {
        "run_started": dict(run_id="r1", command="train", config={"lr": 1e-4}),
        "progress": dict(phase="train", epoch=1, step=3, total=10, loss=0.5),
        "epoch_end": dict(epoch=1, train_loss=0.4, train_acc=0.9, test_loss=None, test_acc=None, lr=1e-4),
        "metrics": dict(split="test", report={"accuracy": 0.9}),
        "artifact_written": dict(kind="onnx", path="/x.onnx"),
        "warning": dict(message="skipped x"),
        "run_finished": dict(status="ok"),
        "error": dict(message="boom"),
    }
    assert set(samples) == set(proto.EVENT_TYPES)
    buf = io.StringIO()
    w = proto.EventWriter(buf)
    for t, fields in samples.items():
        w.emit(t, **fields)
    lines = buf.getvalue().splitlines()
    assert len(lines) == len(samples)
    for line, (t, fields) in zip(lines, samples.items()):
        msg = proto.decode(line)
        assert msg["type"] == t and msg["v"] == proto.PROTOCOL_VERSION
        for k, v in fields.items():
            assert msg[k] == v


def test_nan_becomes_null_and_output_is_strict_json():
    msg = proto.make_event("epoch_end", epoch=1, train_loss=math.nan, train_acc=math.inf, test_loss=None,
                           test_acc=None, lr=0.1)
    line = proto.encode(msg)
    assert json.loads(line)["train_loss"] is None
    assert "NaN" not in line and "Infinity" not in line


@pytest.mark.parametrize(
    "line,needle",
    [
        ("not json", "not JSON"),
        ("[1,2]", "JSON object"),
        ('{"v": 99, "type": "error", "message": "x"}', "version"),
        ('{"v": 1, "type": "nope"}', "unknown event type"),
        ('{"v": 1, "type": "progress", "phase": "train", "epoch": 1, "step": 1}', "total"),
        ('{"v": 1, "type": "progress", "phase": "train", "epoch": "1", "step": 1, "total": 2}', "epoch"),
        ('{"v": 1, "type": "run_finished", "status": true}', "status"),
    ],
)
def test_invalid_lines_rejected(line, needle):
    with pytest.raises(proto.ProtocolError, match=needle):
        proto.decode(line)


def test_make_event_validates():
    with pytest.raises(proto.ProtocolError):
        proto.make_event("progress", phase="train")


def test_line_buffer_reassembles_split_chunks():
    good = proto.encode(proto.make_event("warning", message="héllo wörld"))
    data = (good + "\n" + good + "\r\n" + good).encode("utf-8")
    lb = proto.LineBuffer()
    got = []
    for i in range(0, len(data), 7):  # cuts through lines and multi-byte characters
        got += lb.feed(data[i : i + 7])
    assert len(got) == 2
    got += lb.flush()
    assert [proto.decode(g)["message"] for g in got] == ["héllo wörld"] * 3
    assert lb.flush() == []


def test_protocol_module_is_stdlib_only():
    code = (
        "import sys; import breakfix_desktop.core.protocol; "
        "bad=[m for m in ('numpy','torch','PySide6','PIL') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
