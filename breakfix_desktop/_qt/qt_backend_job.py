"""The training backend as a child process: :class:`QtBackendJob` (one command) and
:class:`QtDrillRunner` (a :class:`~breakfix_desktop.core.drills.DrillStudio`'s queue).

A job runs ``sys.executable -m training --events json ARGS`` (the same interpreter as the GUI) in a
:class:`QProcess`, in the style of Vorta's and Frescobaldi's job classes:

* ``prepare()`` builds the process (program, arguments, environment, working folder), ``start()``
  starts it, ``cancel()`` terminates it and kills it after ``kill_timeout_ms``;
* stdout is read as it arrives; :class:`~breakfix_desktop.core.protocol.LineBuffer` reassembles
  lines split across reads, each line is decoded and validated; a valid message is emitted with
  :attr:`QtBackendJob.message`, an invalid one with :attr:`QtBackendJob.invalid_line` (reported,
  never fatal);
* stderr is kept as a bounded tail, shown when the backend fails;
* :attr:`QtBackendJob.done` fires exactly once with the outcome: ``ok``, ``failed`` (the backend
  reported an error), ``crashed`` (it died or exited non-zero without saying why),
  ``cancelled`` or ``failed_to_start`` (:meth:`QProcess.errorOccurred`).

The GUI never blocks on the backend and keeps working whatever it does.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from ..core.drills import DrillRun, DrillStudio
from ..core.protocol import LineBuffer, ProtocolError, decode

#: The default backend command: the same interpreter, the training package, JSON events.
BACKEND_PREFIX = ("-m", "training", "--events", "json")
REPO_ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = ("ok", "failed", "crashed", "cancelled", "failed_to_start")


def backend_workdir() -> Optional[str]:
    """The source checkout (so ``-m training`` resolves without an install), else None."""
    return str(REPO_ROOT) if (REPO_ROOT / "training" / "__main__.py").is_file() else None


class QtBackendJob(QObject):
    """One backend command in a QProcess.  ``program`` defaults to :data:`sys.executable` and
    ``prefix`` to :data:`BACKEND_PREFIX`; the process runs ``program *prefix *args``."""

    message = Signal(dict)  # a valid protocol message
    invalid_line = Signal(str, str)  # line, reason
    stderr_received = Signal(str)
    done = Signal(str, str)  # outcome (one of OUTCOMES), message for the user

    def __init__(self, args: Sequence[str], program: Optional[str] = None, prefix: Sequence[str] = BACKEND_PREFIX,
                 workdir: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 kill_timeout_ms: int = 3000, stderr_tail_chars: int = 4000, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.args = [str(a) for a in args]
        self.program = program or sys.executable
        self.prefix = [str(a) for a in prefix]
        self.workdir = workdir if workdir is not None else backend_workdir()
        self.env = dict(env or {})
        self.kill_timeout_ms = kill_timeout_ms
        self.process: Optional[QProcess] = None
        self.lines = LineBuffer()
        self._stderr: deque = deque()
        self._stderr_len = 0
        self._stderr_max = stderr_tail_chars
        self.messages_seen = 0
        self.invalid_seen = 0
        self.errors: List[str] = []
        self.finished_status: Optional[str] = None  # from the backend's run_finished
        self.outcome: Optional[str] = None
        self.outcome_message = ""
        self.exit_code: Optional[int] = None
        self._cancel_requested = False
        self._kill_timer: Optional[QTimer] = None

    # ------------------------------------------------------------------ lifecycle
    def command_line(self) -> List[str]:
        return [self.program, *self.prefix, *self.args]

    def prepare(self) -> QProcess:
        """Build (not start) the process: program, arguments, environment, working folder, signals."""
        proc = QProcess(self)
        proc.setProgram(self.program)
        proc.setArguments(self.prefix + self.args)
        proc.setProcessChannelMode(QProcess.SeparateChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        for k, v in self.env.items():
            env.insert(k, v)
        proc.setProcessEnvironment(env)
        if self.workdir:
            proc.setWorkingDirectory(self.workdir)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.errorOccurred.connect(self._on_error)
        proc.finished.connect(self._on_finished)
        self.process = proc
        return proc

    def start(self) -> None:
        if self.process is None:
            self.prepare()
        self.process.start()

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    def cancel(self) -> None:
        """Ask the backend to stop (terminate), and kill it if it is still there after the timeout."""
        if self.outcome is not None:
            return
        self._cancel_requested = True
        if not self.is_running():
            self._finish("cancelled", "cancelled before the backend started")
            return
        self.process.terminate()
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self._kill_timer.start(self.kill_timeout_ms)

    def _kill(self) -> None:
        if self.is_running():
            self.process.kill()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the process has ended (tests and shutdown only)."""
        if self.process is None:
            return True
        return self.process.waitForFinished(msecs) or self.process.state() == QProcess.NotRunning

    # ------------------------------------------------------------------ output
    def feed_stdout(self, chunk: bytes) -> None:
        """Process a chunk of stdout (any size, lines may be split anywhere)."""
        for line in self.lines.feed(chunk):
            self._handle_line(line)

    def _handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            msg = decode(line)
        except ProtocolError as exc:
            self.invalid_seen += 1
            self.invalid_line.emit(line, str(exc))
            return
        self.messages_seen += 1
        if msg["type"] == "error":
            self.errors.append(msg["message"])
        elif msg["type"] == "run_finished":
            self.finished_status = msg["status"]
        self.message.emit(msg)

    def _read_stdout(self) -> None:
        self.feed_stdout(bytes(self.process.readAllStandardOutput()))

    def feed_stderr(self, chunk: bytes) -> None:
        text = chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else str(chunk)
        if not text:
            return
        self._stderr.append(text)
        self._stderr_len += len(text)
        while self._stderr_len > 4 * self._stderr_max and len(self._stderr) > 1:
            self._stderr_len -= len(self._stderr.popleft())
        self.stderr_received.emit(text)

    def _read_stderr(self) -> None:
        self.feed_stderr(bytes(self.process.readAllStandardError()))

    def stderr_tail(self, chars: Optional[int] = None) -> str:
        """The last ``chars`` characters of stderr, starting at a line boundary when possible."""
        chars = chars or self._stderr_max
        text = "".join(self._stderr)
        if len(text) <= chars:
            return text.strip()
        tail = text[-chars:]
        cut = tail.find("\n")
        return (tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail).strip()

    # ------------------------------------------------------------------ endings
    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:
            detail = self.process.errorString() if self.process else ""
            self._finish("failed_to_start",
                         f"The backend could not be started ({' '.join(self.command_line()[:3])} ...): {detail}")
        # Crashed / other errors: finished() follows and decides.

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self._kill_timer is not None:
            self._kill_timer.stop()
        # whatever is still buffered (a last line without newline)
        if self.process is not None:
            self.feed_stdout(bytes(self.process.readAllStandardOutput()))
            self.feed_stderr(bytes(self.process.readAllStandardError()))
        for line in self.lines.flush():
            self._handle_line(line)
        self.exit_code = exit_code
        if self._cancel_requested or self.finished_status == "cancelled":
            self._finish("cancelled", "cancelled" + ("" if exit_status == QProcess.NormalExit else " (stopped)"))
        elif exit_status == QProcess.CrashExit:
            self._finish("crashed", "The backend crashed" + self._why())
        elif exit_code != 0:
            if self.errors:
                self._finish("failed", f"The backend stopped with an error: {self.errors[-1]}")
            else:
                self._finish("crashed", f"The backend exited with status {exit_code}" + self._why())
        elif self.finished_status != "ok":
            self._finish("failed", "The backend exited without reporting a finished run" + self._why())
        else:
            self._finish("ok", "finished")

    def _why(self) -> str:
        tail = self.stderr_tail(600)
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        return f": {last}" if last else " (no output on stderr)"

    def _finish(self, outcome: str, message: str) -> None:
        if self.outcome is not None:
            return
        self.outcome, self.outcome_message = outcome, message
        self.done.emit(outcome, message)


class QtDrillRunner(QObject):
    """Runs a :class:`DrillStudio`'s queue: one job per device at a time, a run's steps in order.

    ``program``/``prefix`` replace the backend command (tests use the event replayer).  A step that
    does not end ``ok`` ends the run with that outcome; later steps are skipped.
    """

    run_finished = Signal(object)  # DrillRun

    def __init__(self, studio: DrillStudio, program: Optional[str] = None, prefix: Sequence[str] = BACKEND_PREFIX,
                 workdir: Optional[str] = None, kill_timeout_ms: int = 3000, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.studio = studio
        self.program = program
        self.prefix = list(prefix)
        self.workdir = workdir
        self.kill_timeout_ms = kill_timeout_ms
        self.jobs: Dict[str, QtBackendJob] = {}
        self._cancelled: set = set()
        studio.subscribe(self._on_studio)
        self.destroyed.connect(lambda *_, s=studio, cb=self._on_studio: s.unsubscribe(cb))

    def _on_studio(self, what: str, run: Optional[DrillRun]) -> None:
        if what == "queued":
            QTimer.singleShot(0, self.pump)

    def pump(self) -> None:
        """Start every run whose device is free."""
        while True:
            run = self.studio.start_next()
            if run is None:
                return
            try:
                self.studio.materialise(run)
            except OSError as exc:
                self.studio.finish(run, "failed", f"could not create the run folder {run.out_dir}: {exc}")
                self.run_finished.emit(run)
                continue
            self._start_step(run, 0)

    def _start_step(self, run: DrillRun, index: int) -> None:
        run.step_index = index
        run.version += 1
        job = QtBackendJob(run.steps[index], program=self.program, prefix=self.prefix, workdir=self.workdir,
                           kill_timeout_ms=self.kill_timeout_ms, parent=self)
        job.message.connect(run.apply)
        job.invalid_line.connect(run.note_invalid)
        job.done.connect(lambda outcome, message, r=run, j=job: self._on_job_done(r, j, outcome, message))
        self.jobs[run.id] = job
        job.start()

    def _on_job_done(self, run: DrillRun, job: QtBackendJob, outcome: str, message: str) -> None:
        tail = job.stderr_tail()
        run.stderr_tail = tail
        cancelled = run.id in self._cancelled
        if outcome == "ok" and not cancelled and run.step_index + 1 < len(run.steps):
            self._start_step(run, run.step_index + 1)
            job.deleteLater()
            return
        self.jobs.pop(run.id, None)
        self._cancelled.discard(run.id)
        job.deleteLater()
        status = {"failed_to_start": "failed"}.get(outcome, outcome)
        if cancelled:
            status, message = "cancelled", "cancelled by the user"
        self.studio.finish(run, status, message, tail if status != "ok" else "")
        self.run_finished.emit(run)
        QTimer.singleShot(0, self.pump)

    def cancel(self, run: DrillRun) -> None:
        """Cancel a queued run (dropped) or a running one (terminate, then kill)."""
        if self.studio.cancel_queued(run):
            self.run_finished.emit(run)
            return
        job = self.jobs.get(run.id)
        if job is not None:
            self._cancelled.add(run.id)
            job.cancel()

    def is_busy(self) -> bool:
        return bool(self.jobs)

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Cancel everything (app closing): drop queued runs, stop running ones."""
        for run in list(self.studio.queue.pending):
            self.studio.cancel_queued(run)
        for job in list(self.jobs.values()):
            job.cancel()
        for job in list(self.jobs.values()):
            if not job.wait(wait_ms):
                job._kill()
                job.wait(1000)


class QtRecipeProbe(QObject):
    """Asks the backend for its drill recipes (``python -m training drill --list``) without blocking.

    ``found(listing)`` carries the parsed JSON; ``missing(reason)`` fires when the backend has no
    drill command (an older backend: the Drills view then offers train / evaluate / audit only)
    or cannot run at all.
    """

    found = Signal(object)
    missing = Signal(str)

    def __init__(self, program: Optional[str] = None, prefix: Sequence[str] = ("-m", "training"),
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.job = QtBackendJob(["drill", "--list"], program=program, prefix=prefix, parent=self)
        self.job.done.connect(self._on_done)
        self._out = bytearray()
        self.answered = False  # True once found or missing has fired
        # --list prints one JSON document, not protocol lines: collect stdout raw
        self.job.feed_stdout = self._out.extend  # type: ignore[method-assign]

    def start(self) -> None:
        self.job.start()

    def _on_done(self, outcome: str, message: str) -> None:
        self.answered = True
        if self.job.exit_code != 0 or outcome == "failed_to_start":
            self.missing.emit(message if outcome == "failed_to_start" else
                              "the backend has no 'drill' command yet" + self.job._why())
            return
        try:
            self.found.emit(json.loads(bytes(self._out).decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.missing.emit(f"'drill --list' did not print JSON: {exc}")
