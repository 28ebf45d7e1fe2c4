"""Model instances on disk: the one place that loads an instance, whatever its kind.

A model instance is a directory (``models/<name>/``) whose ``clf_config.json`` names its
``kind``. Each kind's module reads and writes its own files:

* ``maggotuba-dense``: :mod:`maggotuba.models.tagger` (encoder + dense classifier);
* ``maggotuba-randomforest``: :mod:`maggotuba.models.randomforest`;
* ``maggotuba-bagging``: :mod:`maggotuba.models.bagging` (members are dense taggers).

The model modules never import this one, nor :mod:`maggotuba.predict` or the plug-in
face :mod:`maggotuba.backend`: imports point one way, from the backend through this
module and :mod:`maggotuba.predict` down to the models (``tests/test_import_layers.py``
checks it). Pretrained encoders are loaded by :func:`maggotuba.pretrain.load_encoder`.
"""

from __future__ import annotations

from pathlib import Path

from taggingbackends.errors import FormatError

from .models.bagging import KIND as BAGGING_KIND
from .models.bagging import load_bagging
from .models.randomforest import KIND as RANDOM_FOREST_KIND
from .models.randomforest import load_random_forest
from .models.tagger import DENSE_KIND, SavedTagger, load_dense_tagger, model_kind

__all__ = ["LOADERS", "load_tagger", "model_kind"]

#: ``kind`` → loader; a directory without a readable kind is tried as a dense tagger
#: (instances written before kinds existed), whose loader names the missing file.
LOADERS = {
    DENSE_KIND: load_dense_tagger,
    RANDOM_FOREST_KIND: load_random_forest,
    BAGGING_KIND: load_bagging,
}


def load_tagger(directory: str | Path, device: str = "cpu") -> SavedTagger:
    """Load the model instance in ``directory`` (any kind in :data:`LOADERS`);
    FormatError naming the file if it is broken or of an unknown kind."""
    directory = Path(directory)
    kind = model_kind(directory)
    if kind is not None and kind not in LOADERS:
        raise FormatError(directory / "clf_config.json",
                          f"unknown model kind {kind!r} (known: {', '.join(LOADERS)})")
    return LOADERS.get(kind, load_dense_tagger)(directory, device=device)
