"""Localisation maps for the review queue: where the pattern detector saw the trigger.

Qt-free.  A detector *may* provide a map as an extra output; the engine only uses the score, so
this module asks the detector again, for one quarantined scan, when a reviewer opens it.

Convention (any model in the manifest may follow it; names are never hard-coded): a verified
``detector`` or ``check`` model whose outputs include one named ``localisation``,
``localization``, ``heatmap``, ``map``, ``saliency``, ``cam`` or ``mask`` (case-insensitive;
else a name containing one of these), shaped N x H x W or N x 1 x H x W, in model-input space
(the square 224 x 224 the preprocessing makes).  Values are scaled to [0, 1] and mapped back onto
the original scan (:func:`~.display.map_to_image`).  Models without such an output simply have
no map; the review queue then says so.

The map is computed from the quarantine copy through the one preprocessing path
(:func:`~.preprocess.preprocess_file`), with the same detector versions that flagged the scan
when they are still installed and verified.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .display import map_to_image, normalise_map
from .model_registry import ModelCatalog, ModelEntry, create_session
from .preprocess import load_grey, to_model_input

__all__ = ["MAP_OUTPUT_NAMES", "NO_MAP", "Localisation", "Localiser", "map_output_name"]

MAP_OUTPUT_NAMES = ("localisation", "localization", "heatmap", "map", "saliency", "cam", "mask")
NO_MAP = "no localisation map available"
DETECTOR_ROLES = ("detector", "check")


def map_output_name(names: Sequence[str]) -> Optional[str]:
    """The output that carries a localisation map, or ``None``."""
    lower = {n.lower(): n for n in names}
    for key in MAP_OUTPUT_NAMES:
        if key in lower:
            return lower[key]
    for key in MAP_OUTPUT_NAMES:
        for low, name in lower.items():
            if key in low and "score" not in low:
                return name
    return None


@dataclass
class Localisation:
    """The scan (grey, full resolution) and, when a detector provides one, its map on that scan."""

    image: np.ndarray
    heat: Optional[np.ndarray] = None
    model: Optional[str] = None
    message: str = NO_MAP


class Localiser:
    """Opens detector sessions on demand (cached per verified file) and computes maps."""

    def __init__(self, catalog: ModelCatalog):
        self.catalog = catalog
        self._sessions: Dict[str, Tuple[object, str, List[str]]] = {}
        self._lock = threading.Lock()

    def detectors_for(self, models: Sequence[str]) -> List[ModelEntry]:
        """Verified detectors, those named in ``models`` (``"name sha12"``, as on the record) first."""
        verified = [m for m in self.catalog.registry.verified() if m.role in DETECTOR_ROLES]
        used = [m for m in verified if m.version_label in models]
        return used + [m for m in verified if m not in used]

    def _session(self, entry: ModelEntry):
        key = entry.actual_sha256 or entry.name
        with self._lock:
            if key not in self._sessions:
                ms = create_session(entry, prefer_gpu=self.catalog.prefer_gpu)
                sess = ms.session
                self._sessions[key] = (sess, sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()])
            return self._sessions[key]

    def localise(self, path: Path, frame: Optional[int] = None, models: Sequence[str] = ()) -> Localisation:
        """Decode ``path`` (raises :class:`~.preprocess.PreprocessError`) and ask the detectors for a
        map.  A detector that fails is skipped and named in the message; never raises for it."""
        grey = load_grey(path, frame=frame)
        out = Localisation(image=grey)
        problems = []
        batch: Optional[np.ndarray] = None
        for entry in self.detectors_for(models):
            names = [o.get("name") for o in entry.card.get("outputs", []) if isinstance(o, dict)]
            if names and map_output_name([n for n in names if isinstance(n, str)]) is None:
                continue  # its card lists its outputs and none is a map: do not even open it
            try:
                sess, input_name, outputs = self._session(entry)
                name = map_output_name(outputs)
                if name is None:
                    continue
                if batch is None:
                    batch = to_model_input(grey)[None]
                raw = sess.run([name], {input_name: batch})[0]
                heat = normalise_map(np.asarray(raw)[0])
            except Exception as exc:  # noqa: BLE001 - no map is a message, not a crash
                problems.append(f"{entry.name}: {exc.__class__.__name__}: {exc}")
                continue
            if heat is None:
                out.model = entry.name
                out.message = f"{entry.name} provides a localisation map, but it is empty for this scan"
                return out
            out.heat = map_to_image(heat, grey.shape)
            out.model = entry.name
            out.message = f"localisation map from {entry.name}"
            return out
        if problems:
            out.message = f"{NO_MAP} ({'; '.join(problems)})"
        return out
