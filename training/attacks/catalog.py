"""Re-export of the torch-free attack catalog (:mod:`breakfix_desktop.core.attack_catalog`).

The catalog lives in the core package so the GUI can import it without torch; this module (and
``training.attacks``) exposes the same objects to the training side.
"""

from breakfix_desktop.core.attack_catalog import *  # noqa: F401,F403
from breakfix_desktop.core.attack_catalog import __all__  # noqa: F401
