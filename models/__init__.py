"""Reference models on public data, each exposing ``build_model(data) -> pm.Model``.

The data ship in ``models/data/`` (provenance and licences in ``models/data/SOURCE.md``)
and are read by :mod:`models._data`.  Run a model from the repository root, e.g.
``python -m models.scotland_bym2`` (``bash dev.sh demo``).
"""

from models._data import load_nyc as load_nyc
from models._data import load_scotland as load_scotland
