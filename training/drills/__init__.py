"""Drills: every result of the paper as a reproducible, end-to-end recipe on the real data.

``python -m training drill --list`` lists them; ``python -m training drill NAME --out DIR
[--config FILE] [--quick]`` runs one.  One recipe per result:

=====================  ======================================================  ===========
name                   what it reproduces                                      module
=====================  ======================================================  ===========
table1-backdoor-cnn    Table 1: creeper backdoor on the CNN                    backdoor.py
table2-backdoor-resnet50  Table 2: creeper backdoor on ResNet-50               backdoor.py
table3-fgsm            Table 3: FGSM accuracy over eps, per model              evasion.py
table4-pgd             Table 4: PGD accuracy over (eps, alpha, steps)          evasion.py
table5-noisy-loss      Table 5: NoisyLoss over (epochs, strength)              loss_attacks.py
table6-fooling-loss    Table 6: FoolingLoss classification report              loss_attacks.py
fig5-drunk-sweep       Figure 5: accuracy curves over DrunkOptimizer strengths  drunk.py
fig6-drunk-curves      Figure 6: clean vs attacked vs defended curves          drunk.py
table7-detector-mixed-sizes  Table 7: pattern detector, mixed sizes -> small   detector.py
table8-detector-small  Table 8: pattern detector, small -> small               detector.py
table9-detector-triangles  Table 9: pattern detector, shapes -> triangles      detector.py
=====================  ======================================================  ===========

``create_drill(name)`` raises ``KeyError`` naming the known drills on an unknown name.
"""

from __future__ import annotations

from typing import Dict, List, Type

from .base import Drill, DrillCancelled, DrillContext, DrillError, REPORT_FORMAT, merge_settings

_REGISTRY: Dict[str, Type[Drill]] = {}


def register_drill(cls: Type[Drill]) -> Type[Drill]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"drill name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def list_drills() -> List[str]:
    _load()
    return list(_REGISTRY)


def create_drill(name: str) -> Drill:
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown drill {name!r}; known drills: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def _load() -> None:
    # importing the modules registers their drills (in the paper's order)
    from . import backdoor, evasion, loss_attacks, drunk  # noqa: F401,I001
    from . import detector  # noqa: F401  (§6.6 Tables 7-9, after the attacks' recipes)


__all__ = ["Drill", "DrillCancelled", "DrillContext", "DrillError", "REPORT_FORMAT", "create_drill",
           "list_drills", "merge_settings", "register_drill"]
