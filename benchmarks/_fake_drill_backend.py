"""A fake training backend for ``bench_drill_ui.py``: streams protocol events at a fixed rate.

    python benchmarks/_fake_drill_backend.py [--rate 100] [--seconds 25] [--batches 50]
        [--template tests/fixtures/drill_fig6_quick.jsonl] [--seed 0] [-- BACKEND ARGS...]

Started by the Drills view's real :class:`~breakfix_desktop._qt.qt_backend_job.QtBackendJob` in
place of ``python -m training --events json`` (the arguments after ``--``, the drill command the
view built, are ignored).  It writes, one flushed line per event as the real backend does:

* the template's ``run_started`` (a recorded ``drill fig6-drunk-curves`` stream);
* then ``--rate`` events per second for ``--seconds``: three models (the template's series,
  clean / attacked / defended) training side by side, round robin - a ``progress`` event per batch
  (``--batches`` per epoch; loss, accuracy, images/s), and at each epoch's end an ``epoch_end``
  (train / val / test loss and accuracy, lr) and an ``artifact_written`` (checkpoint); every
  event's extra fields (``series``, ``role``, ...) copied from the template's event of that series;
* the template's last ``artifact_written`` (report) and its ``run_finished``.

Events are due at ``start + i / rate``; whatever is due is written at once, so a late wake-up
catches up instead of lowering the rate.  Stdlib only; the values are seeded noisy decays, so the
curves look like training.  The last line on stderr says how many events were written in how long.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "fixtures" / "drill_fig6_quick.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    p.add_argument("--seconds", type=float, default=25.0, help="how long to stream (default 25)")
    p.add_argument("--batches", type=int, default=50, help="batches per epoch of each model (default 50)")
    p.add_argument("--template", type=Path, default=TEMPLATE, help="recorded multi-series stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("backend_args", nargs="*", help="the view's backend arguments (ignored)")
    return p


def load_template(path: Path) -> Dict[str, Any]:
    """run_started, run_finished, the report artifact and per series its first progress / epoch_end."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out: Dict[str, Any] = {"progress": {}, "epoch_end": {}, "series": []}
    for e in events:
        kind, series = e["type"], e.get("series")
        if kind in ("progress", "epoch_end") and series:
            if series not in out["series"]:
                out["series"].append(series)
            out[kind].setdefault(series, e)
        elif kind in ("run_started", "run_finished"):
            out[kind] = e
        elif kind == "artifact_written" and e["kind"] == "report":
            out["report"] = e
    return out


def stream(tpl: Dict[str, Any], batches: int, rng: random.Random) -> Iterator[Dict[str, Any]]:
    """Endless training events of the template's models, round robin, one batch at a time."""
    names: List[str] = tpl["series"]
    state = {n: {"epoch": 1, "step": 0, "losses": [], "hits": 0} for n in names}
    # the attacked model learns worse (as in Figure 6); the others converge
    floor = {n: (0.9 if tpl["progress"][n].get("role") == "attacked" else 0.15) for n in names}
    while True:
        for name in names:
            s = state[name]
            s["step"] += 1
            progress_made = (s["epoch"] - 1 + s["step"] / batches)
            level = floor[name] + (1.4 - floor[name]) * math.exp(-progress_made / 3.0)
            loss = max(0.01, level + rng.gauss(0.0, 0.12))
            acc = min(1.0, max(0.0, 1.0 - loss / 1.6 + rng.gauss(0.0, 0.05)))
            s["losses"].append(loss)
            s["hits"] += acc
            yield dict(tpl["progress"][name], epoch=s["epoch"], step=s["step"], total=batches, loss=loss, acc=acc,
                       images_per_s=rng.uniform(300.0, 340.0))
            if s["step"] == batches:
                train_loss = sum(s["losses"]) / len(s["losses"])
                train_acc = s["hits"] / batches
                test_loss = level + 0.1 + rng.gauss(0.0, 0.03)
                test_acc = min(1.0, max(0.0, 1.0 - test_loss / 1.6))
                yield dict(tpl["epoch_end"][name], epoch=s["epoch"], train_loss=train_loss, train_acc=train_acc,
                           train_seconds=batches / 30.0, val_loss=test_loss + 0.02, val_acc=test_acc - 0.01,
                           test_loss=test_loss, test_acc=test_acc)
                yield {"v": 1, "type": "artifact_written", "kind": "checkpoint",
                       "path": f"/tmp/fake-drill/{name}/checkpoint.pt"}
                s.update(epoch=s["epoch"] + 1, step=0, losses=[], hits=0)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    tpl = load_template(args.template)
    out = sys.stdout
    rng = random.Random(args.seed)

    def write(event: Dict[str, Any]) -> None:
        event = dict(event, t=round(time.time(), 3))
        out.write(json.dumps(event, separators=(",", ":")) + "\n")

    write(tpl["run_started"])
    out.flush()
    total = int(round(args.rate * args.seconds))
    events = stream(tpl, args.batches, rng)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * args.rate) + 1)
        while sent < due:
            write(next(events))
            out.flush()  # one flushed line per event, as the real backend's EventWriter
            sent += 1
        wait = start + sent / args.rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    elapsed = time.perf_counter() - start
    if "report" in tpl:
        write(tpl["report"])
    write(dict(tpl["run_finished"], summary=dict(tpl["run_finished"].get("summary") or {}, fake=True)))
    out.flush()
    print(f"fake backend: {sent} events in {elapsed:.2f} s ({sent / max(elapsed, 1e-9):.1f}/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
