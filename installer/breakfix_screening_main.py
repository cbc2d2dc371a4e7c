"""Entry script of the frozen screening bundle: ``breakfix_desktop.app:main``.

PyInstaller runs its entry script as ``__main__``; ``breakfix_desktop/app.py`` uses relative
imports, so this launcher imports the package and calls ``main`` (the same function as the
``breakfix-desktop`` console script).
"""

import sys

from breakfix_desktop.app import main

if __name__ == "__main__":
    sys.exit(main())
