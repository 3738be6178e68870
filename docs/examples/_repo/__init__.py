"""Put the repository root on ``sys.path`` so that the example pages can ``import models``.

The examples read the bundled data and reference models from ``models/`` at the repository
root, which is not part of the installed package.  Each page imports this module first, so
``python docs/examples/<page>.py`` from any directory, a Jupyter kernel started in
``docs/examples`` (the paired ``.ipynb``) and the documentation build all find it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # docs/examples/_repo/__init__.py
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
