"""CLI event sinks: a progress bar for people, JSON lines for the GUI."""

import io

from training.events import TerminalWriter, make_writer
from breakfix_desktop.core.protocol import EventWriter, NullWriter


def test_terminal_writer_draws_bar_and_summaries():
    buf = io.StringIO()
    w = TerminalWriter(buf)
    for step in (1, 2, 3, 4):
        w.emit("progress", phase="train", epoch=1, step=step, total=4, loss=0.5, images_per_s=12.0)
    w.emit("epoch_end", epoch=1, train_loss=0.5, train_acc=0.8, test_loss=None, test_acc=0.75, lr=1e-4)
    out = buf.getvalue()
    assert "\rtrain epoch 1 [" in out and "4/4" in out and "12 img/s" in out
    assert "epoch 1: train acc 0.8000" in out and "test acc 0.7500" in out


def test_make_writer_modes(monkeypatch):
    assert type(make_writer("json")) is EventWriter
    assert isinstance(make_writer("none"), NullWriter)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # not a tty -> JSON lines
    assert type(make_writer("auto")) is EventWriter
