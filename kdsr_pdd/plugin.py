"""Registration, the way Real-ESRGAN's package does it: importing this module registers every part of the
plugin into BasicSR's registries (the entry points import it; nothing below imports it).

* :mod:`kdsr_arch`: KDSR archs, loss, dataset and the five KDSR models;
* :mod:`pdd_model`: PDD's losses, dataset and model;
* :mod:`kdsr_pdd.datasets`: ``RealESRGANCropDataset``;
* :mod:`kdsr_pdd.metrics`: the pyiqa-backed metrics (pyiqa itself is imported when one is first computed).
"""
import kdsr_arch  # noqa: F401
import pdd_model  # noqa: F401
from kdsr_pdd import datasets, metrics  # noqa: F401
