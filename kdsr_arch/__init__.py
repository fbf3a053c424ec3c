"""KDSR (ICLR 2023): knowledge-distilled implicit degradation representations for blind SR.

Importing the package registers its archs, loss, dataset and models into BasicSR's registries (after
:func:`kdsr_pdd.runtime.prepare_basicsr` has made BasicSR 1.4.2 ready).
"""
from kdsr_pdd.runtime import prepare_basicsr

prepare_basicsr()

from kdsr_arch import archs, data, families, losses, models  # noqa: E402,F401  (register into BasicSR)
