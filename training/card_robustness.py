"""Put measured robustness on a model card: ``python -m training card-robustness``.

The evasion drills (``table3-fgsm``, ``table4-pgd``) attack torch checkpoints - an ONNX file has no
gradients - so their numbers belong to the shipped file only if that file was exported from the
attacked checkpoint.  This module checks that link by SHA-256 and then writes the rows into the
card's ``metrics.robustness``, which the workstation's Models page shows next to clean accuracy:

- an **ensemble** card names its ``ensemble.json`` (``ensemble.sha256``) and each member's
  checkpoint (``ensemble.members[].sha256``): the report's model whose file has that hash is the
  ensemble, or that member;
- a **classifier** card names its source checkpoint (``training.source_checkpoint.sha256``,
  written by ``export`` since 2026-12-03), or the checkpoint was rebuilt from the card's file by
  ``import-onnx`` (the checkpoint's ``provenance.imported_from.sha256`` is the card's file hash);
- the same rebuild link holds for an ensemble: an ensemble ``.json`` (``make-ensemble``) whose every
  member checkpoint was rebuilt by ``import-onnx --member NAME`` from this card's ensemble file, one
  per member of the card with the same weight, is that ensemble; one such member checkpoint is that
  member.  This is how a shipped ensemble is attacked when its training checkpoints are gone: the
  rebuilt members carry the shipped weights exactly as stored (float16 storage included).

A shipped file is re-sealed in place when ``calibrate`` stamps its temperature and flag threshold
into the ONNX metadata: its SHA-256 changes, its graph and weights do not.  An import record links
to the card when it names the card's file hash, or the card's **graph hash** (``graph_sha256``: the
model without its metadata, recorded by ``import-onnx`` since 2026-12-08).  Older records name only
a file hash; ``same_graph`` (``--same-graph FILE``) takes the earlier file itself, from the
repository's history, and its file hash counts when its graph hash is the card's.

The hash of each attacked file comes from the report (``model_files``, recorded by the drill) and,
for older reports, from the file as it is now.  A file that no longer has the hash the report
recorded is not linked through its import record: it is not the file that was attacked.  A report
with no model matching the card is refused with the hashes it saw, never attached to the wrong model.  The card's own ``sha256``
covers the ONNX file, not the card, so the file stays verified.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from breakfix_desktop.core.fsutil import atomic_write_bytes
from breakfix_desktop.core.hashing import sha256_file

__all__ = ["CardRobustnessError", "robustness_rows", "attach_robustness", "EVASION_DRILLS", "NOTE"]

EVASION_DRILLS = ("table3-fgsm", "table4-pgd")
REPORT_FORMAT = "breakfix-drill-report/1"
NOTE = ("White-box attacks (untargeted) on the torch checkpoint this file was exported from; accuracy on "
        "Testing scans. 'worst case' counts a scan as correct only if the clean prediction, FGSM and every "
        "PGD restart all leave it correct.")


class CardRobustnessError(ValueError):
    """A report that cannot be attached to the card (the message names the file and the reason)."""


def _attack_of(drill: str, key: str, settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The attack behind one row key of a drill report, as plain parameters and a label."""
    sa = settings.get("strong_attack") or {}
    if key.endswith("worst case"):
        eps, alpha, steps, restarts = (sa.get(k) for k in ("eps", "alpha", "steps", "restarts"))
        return {"attack": "worst case", "eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts,
                "label": f"worst case of FGSM and {restarts} x PGD-{steps} (eps {eps:g}, alpha {alpha:g})"}
    if drill == "table3-fgsm":
        eps = float(key)
        return {"attack": "FGSM", "eps": eps, "label": f"FGSM eps {eps:g}"}
    eps, alpha, steps = (float(v) for v in key.split("/"))
    return {"attack": "PGD", "eps": eps, "alpha": alpha, "steps": int(steps),
            "random_start": bool(settings.get("random_start", True)),
            "label": f"PGD eps {eps:g}, alpha {alpha:g}, {int(steps)} steps"}


def robustness_rows(report: Mapping[str, Any], model: str, report_path: str = "") -> List[Dict[str, Any]]:
    """Every attacked row of ``model`` in one evasion drill report (the clean row rides along)."""
    rows = (report.get("results") or {}).get(model)
    if not isinstance(rows, Mapping):
        raise CardRobustnessError(f"{report_path or 'report'}: no results for model {model!r}")
    clean = (rows.get("clean") or {}).get("accuracy")
    out = []
    for key, row in rows.items():
        if key == "clean" or not isinstance(row, Mapping) or "accuracy" not in row:
            continue
        n = row.get("n")
        out.append({**_attack_of(str(report.get("drill")), key, report.get("settings") or {}),
                    "accuracy": row["accuracy"], "clean_accuracy": clean, "n": n,
                    "scans": "stratified Testing subset" if report.get("settings", {}).get("max_test_images")
                    else "all Testing scans",
                    "drill": report.get("drill"), "report": report_path, "measured": report.get("finished"),
                    "report_model": model})
    return out


def _card_links(card: Mapping[str, Any]) -> Dict[str, Tuple[str, str]]:
    """sha256 -> (``model`` | ``member``, name) for the files this card was built from."""
    links: Dict[str, Tuple[str, str]] = {}
    ens = card.get("ensemble")
    if card.get("role") == "ensemble" and isinstance(ens, Mapping):
        if ens.get("sha256"):
            links[str(ens["sha256"]).lower()] = ("model", str(card.get("name")))
        for m in ens.get("members") or []:
            if isinstance(m, Mapping) and m.get("sha256"):
                links.setdefault(str(m["sha256"]).lower(), ("member", str(m.get("name"))))
    src = (card.get("training") or {}).get("source_checkpoint")
    if isinstance(src, Mapping) and src.get("sha256"):
        links[str(src["sha256"]).lower()] = ("model", str(card.get("name")))
    return links


def _import_record(path: Path) -> Optional[Mapping[str, Any]]:
    """``provenance.imported_from`` of a checkpoint rebuilt by ``import-onnx`` (None if it was not)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable file simply has no link
        return None
    prov = state.get("provenance") if isinstance(state, dict) else None
    imp = prov.get("imported_from") if isinstance(prov, dict) else None
    return imp if isinstance(imp, dict) and imp.get("sha256") else None


class _Source:
    """What an import record must name to have been rebuilt from the card's file: one of its file
    hashes (now, or before a metadata-only re-seal) or its graph hash."""

    def __init__(self, card: Mapping[str, Any], card_path: Path, same_graph: Sequence[Path],
                 log: Callable[[str], None]) -> None:
        from .export import graph_sha256  # onnx: only when a card is linked

        self.files = {str(card.get("sha256", "")).lower()} - {""}
        self.graph = str(card.get("graph_sha256") or "").lower() or None
        onnx_file = card_path.parent / str(card.get("file") or "")
        if self.graph is None and card.get("file") and onnx_file.is_file() and sha256_file(onnx_file) in self.files:
            self.graph = graph_sha256(onnx_file)
        for other in same_graph:
            other = Path(other)
            if not other.is_file():
                raise CardRobustnessError(f"--same-graph {other}: file not found")
            if self.graph is None:
                raise CardRobustnessError(f"--same-graph {other}: the graph hash of {card_path.name}'s file is "
                                          f"unknown (no graph_sha256 on the card and {onnx_file} is absent or "
                                          "not the file the card names)")
            got = graph_sha256(other)
            if got != self.graph:
                raise CardRobustnessError(f"--same-graph {other}: its graph (SHA-256 {got[:12]}) is not the one "
                                          f"{card_path.name} describes ({self.graph[:12]}); it cannot stand for it")
            sha = sha256_file(other)
            self.files.add(sha)
            log(f"{other}: same graph as {card_path.name} ({got[:12]}); its file hash {sha[:12]} counts as the card's")

    def built(self, imp: Optional[Mapping[str, Any]]) -> bool:
        if not imp:
            return False
        if str(imp.get("sha256", "")).lower() in self.files:
            return True
        return self.graph is not None and str(imp.get("graph_sha256") or "").lower() == self.graph


def _unchanged(path: Path, sha: Optional[str]) -> bool:
    """True when ``path`` still has the hash recorded for it (or none was recorded)."""
    return not sha or sha256_file(path) == str(sha).lower()


def _rebuilt_link(card: Mapping[str, Any], path: Path, source: "_Source") -> Optional[Tuple[str, str]]:
    """For an ensemble card: ``("model", card name)`` when ``path`` is an ensemble .json whose members
    are exactly the card's members, each rebuilt from the card's file by ``import-onnx --member`` and
    weighted as on the card; ``("member", name)`` when ``path`` is one such rebuilt member checkpoint."""
    weights = {str(m.get("name")): float(m.get("weight", 1.0))
               for m in (card.get("ensemble") or {}).get("members") or [] if isinstance(m, Mapping)}
    if not source.files or not weights:
        return None

    def member_of(ckpt: Path) -> Optional[str]:
        imp = _import_record(ckpt)
        if not source.built(imp):
            return None
        name = imp.get("member")
        return str(name) if name in weights else None

    if path.suffix.lower() != ".json":
        name = member_of(path)
        return ("member", name) if name else None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    members = spec.get("members") if isinstance(spec, dict) else None
    if not isinstance(members, list) or len(members) != len(weights):
        return None
    seen = set()
    for m in members:
        if not isinstance(m, Mapping) or not m.get("checkpoint"):
            return None
        ckpt = Path(str(m["checkpoint"]))
        ckpt = ckpt if ckpt.is_absolute() else path.parent / ckpt
        name = member_of(ckpt) if ckpt.is_file() and _unchanged(ckpt, m.get("sha256")) else None
        if name is None or name != m.get("name") or name in seen or float(m.get("weight", 1.0)) != weights[name]:
            return None
        seen.add(name)
    return ("model", str(card.get("name")))


def _report_files(report: Mapping[str, Any], root: Path) -> Dict[str, Tuple[Optional[Path], Optional[str]]]:
    """model name -> (file, sha256) for every model with results in the report."""
    recorded = report.get("model_files") or {}
    refs = (report.get("settings") or {}).get("models") or {}
    out: Dict[str, Tuple[Optional[Path], Optional[str]]] = {}
    for name in report.get("results") or {}:
        rec = recorded.get(name) or {}
        ref = rec.get("path") or refs.get(name)
        path = None
        if ref:
            path = Path(ref) if Path(ref).is_absolute() else root / ref
        sha = rec.get("sha256") or (sha256_file(path) if path is not None and path.is_file() else None)
        out[name] = (path, str(sha).lower() if sha else None)
    return out


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("attack", "eps", "alpha", "steps", "restarts", "n")
    return all(a.get(k) == b.get(k) for k in keys)


def attach_robustness(card_path: Path, reports: List[Path], *, root: Optional[Path] = None,
                      same_graph: Sequence[Path] = (),
                      log: Callable[[str], None] = lambda _m: None) -> Dict[str, Any]:
    """Add the matching rows of every report to the card at ``card_path`` (written in place).

    ``same_graph``: earlier versions of the card's ONNX file (e.g. from before ``calibrate`` re-sealed
    it); each must have the card's graph hash, and checkpoints rebuilt from it then link too.

    Returns ``{"model": [...], "members": {name: [...]}, "note": ...}`` as written.  Raises
    :class:`CardRobustnessError` for a report that is not an evasion drill report or has no model
    built into this card.
    """
    card_path = Path(card_path)
    root = Path.cwd() if root is None else Path(root)
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardRobustnessError(f"model card {card_path}: {exc}") from exc
    if card.get("role") not in ("classifier", "ensemble"):
        raise CardRobustnessError(f"model card {card_path}: role {card.get('role')!r}; robustness is measured "
                                  "for classifiers and ensembles")
    links = _card_links(card)
    source = _Source(card, card_path, same_graph, log)
    metrics = card.setdefault("metrics", {})
    current = metrics.get("robustness") if isinstance(metrics.get("robustness"), dict) else {}
    model_rows: List[Dict[str, Any]] = list(current.get("model") or [])
    member_rows: Dict[str, List[Dict[str, Any]]] = {k: list(v) for k, v in (current.get("members") or {}).items()}

    def put(rows: List[Dict[str, Any]], new: List[Dict[str, Any]]) -> None:
        for row in new:
            rows[:] = [r for r in rows if not _same_row(r, row)] + [row]

    for report_path in reports:
        report_path = Path(report_path)
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CardRobustnessError(f"drill report {report_path}: {exc}") from exc
        if report.get("format") != REPORT_FORMAT or report.get("drill") not in EVASION_DRILLS:
            raise CardRobustnessError(f"drill report {report_path}: not a {' / '.join(EVASION_DRILLS)} report "
                                      f"(drill {report.get('drill')!r})")
        if report.get("quick"):
            raise CardRobustnessError(f"drill report {report_path}: a quick run (small synthetic settings); "
                                      "only full runs go on a card")
        files = _report_files(report, root)
        matched = 0
        for name, (path, sha) in files.items():
            link = links.get(sha) if sha else None
            rebuilt = link is None and path is not None and path.is_file() and _unchanged(path, sha)
            if rebuilt and card.get("role") == "classifier" and source.built(_import_record(path)):
                link = ("model", str(card.get("name")))
            if rebuilt and link is None and card.get("role") == "ensemble":
                link = _rebuilt_link(card, path, source)
            if link is None:
                continue
            rows = robustness_rows(report, name, str(report_path))
            kind, who = link
            if kind == "model":
                put(model_rows, rows)
            else:
                put(member_rows.setdefault(who, []), rows)
            matched += 1
            log(f"{report_path}: {name} -> {kind} {who}: {len(rows)} row(s)")
        if not matched:
            seen = ", ".join(f"{n} ({(s or 'no file')[:12]})" for n, (_p, s) in files.items()) or "none"
            raise CardRobustnessError(f"drill report {report_path}: none of its models was built into "
                                      f"{card_path.name} (models and SHA-256 seen: {seen})")
    section = {"note": NOTE, "model": model_rows, "members": member_rows}
    metrics["robustness"] = section
    if source.graph and not card.get("graph_sha256"):  # verified above from the card's own file
        card["graph_sha256"] = source.graph
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    return section
