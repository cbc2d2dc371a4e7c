"""Defenses (paper §5).

* :class:`UpdateGuard` (update_guard.py) counters optimizer tampering (§4.5 DrunkOptimizer).
* adversarial.py - adversarial training (§5.2) as Trainer hooks: :class:`AdversarialTraining`
  (the paper's appended FGSM/PGD copies), :class:`FastAdversarialTraining` (Wong et al. 2020),
  :class:`TradesLoss` (Zhang et al. 2019), and :class:`RobustEarlyStopping` (best-robust
  checkpoint, stop on catastrophic overfitting).
* The §5.1 augmentation pipeline lives in :mod:`training.augment`.
"""

from .adversarial import (AdversarialTraining, FastAdversarialTraining, RobustEarlyStopping, TradesLoss,
                          make_adversarial)
from .update_guard import UpdateGuard

__all__ = ["AdversarialTraining", "FastAdversarialTraining", "RobustEarlyStopping", "TradesLoss", "UpdateGuard",
           "make_adversarial"]
