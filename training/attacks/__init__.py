"""The paper's attacks (§4): one class per module, all registered by name.

* evasion: :class:`FGSM` (fgsm.py), :class:`PGD` (pgd.py) — subclasses of :class:`Attack`;
* poisoning: :class:`Backdoor` (backdoor.py) with :class:`PoisonedDataset`;
* loss: :class:`NoisyLoss` (noisy_loss.py), :class:`FoolingLoss` (fooling_loss.py);
* optimizer: :class:`DrunkOptimizer` (drunk_optimizer.py).

``create_attack(name, subject, **params)`` builds one with parameters validated against the
torch-free catalog (``breakfix_desktop.core.attack_catalog``, re-exported here as ``catalog``).
"""

from breakfix_desktop.core import attack_catalog as catalog

from .base import Attack, class_index, create_attack, get_attack_class, list_attacks, register
from .backdoor import Backdoor, PoisonedDataset, load_trigger
from .drunk_optimizer import DrunkOptimizer
from .fgsm import FGSM
from .fooling_loss import FoolingLoss
from .noisy_loss import NoisyLoss
from .pgd import PGD

__all__ = [
    "Attack", "Backdoor", "DrunkOptimizer", "FGSM", "FoolingLoss", "NoisyLoss", "PGD", "PoisonedDataset",
    "catalog", "class_index", "create_attack", "get_attack_class", "list_attacks", "load_trigger", "register",
]
