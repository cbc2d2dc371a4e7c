"""Event sinks for the CLI: JSON lines for the GUI, or a progress bar for a person at a terminal."""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Dict, Optional

from breakfix_desktop.core.protocol import EventWriter, NullWriter, make_event


class TerminalWriter(EventWriter):
    """Renders events for a human: a one-line progress bar (redrawn ~10x/s) and epoch summaries."""

    def __init__(self, stream: Optional[IO[str]] = None, width: int = 30):
        super().__init__(stream)
        self.width = width
        self._last_draw = 0.0

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        msg = make_event(type_, **fields)
        out = self.stream
        if type_ == "progress":
            now = time.monotonic()
            if now - self._last_draw < 0.1 and msg["step"] != msg["total"]:
                return msg
            self._last_draw = now
            frac = msg["step"] / max(msg["total"], 1)
            bar = "#" * int(frac * self.width)
            extra = ""
            if msg.get("loss") is not None:
                extra += f" loss {msg['loss']:.4f}"
            if msg.get("images_per_s"):
                extra += f" {msg['images_per_s']:.0f} img/s"
            out.write(f"\r{msg['phase']} epoch {msg['epoch']} [{bar:<{self.width}}] {msg['step']}/{msg['total']}{extra}  ")
            if msg["step"] == msg["total"]:
                out.write("\n")
        elif type_ == "epoch_end":
            def f(v):
                return "-" if v is None else f"{v:.4f}"
            out.write(
                f"epoch {msg['epoch']}: train acc {f(msg['train_acc'])} loss {f(msg['train_loss'])} | "
                f"val acc {f(msg.get('val_acc'))} | test acc {f(msg['test_acc'])} loss {f(msg['test_loss'])} | lr {msg['lr']:.2e}\n"
            )
        elif type_ == "artifact_written":
            out.write(f"wrote {msg['kind']}: {msg['path']}\n")
        elif type_ in ("warning", "error"):
            out.write(f"{type_}: {msg['message']}\n")
        elif type_ == "run_finished":
            out.write(f"finished: {msg['status']}\n")
        out.flush()
        return msg


def make_writer(mode: str = "auto") -> EventWriter:
    """``json``: protocol lines on stdout; ``human``: progress bar; ``none``; ``auto``: json unless a tty."""
    if mode == "auto":
        mode = "human" if sys.stdout.isatty() else "json"
    if mode == "json":
        return EventWriter()
    if mode == "human":
        return TerminalWriter()
    if mode == "none":
        return NullWriter()
    raise ValueError(f"--events: unknown mode {mode!r} (auto, json, human, none)")
