"""Runtime shell of the KDSR / PDD BasicSR plugin.

``import kdsr_pdd`` mends BasicSR 1.4.2 for today's stack (:mod:`kdsr_pdd.compat`) and registers
every architecture, model, dataset, loss and metric of :mod:`kdsr_arch` and :mod:`pdd_model` into
BasicSR's registries.
"""
from kdsr_pdd import compat

compat.apply()

import kdsr_arch  # noqa: E402,F401  (registers KDSR components)
import pdd_model  # noqa: E402,F401  (registers PDD components)
from kdsr_pdd import realesrgan_bases  # noqa: E402,F401
from kdsr_pdd import metrics  # noqa: E402,F401  (registers pyiqa metrics)

__version__ = '0.1.0'
