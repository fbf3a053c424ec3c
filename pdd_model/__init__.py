"""PDD (ECCV 2024): pairwise distance distillation for unsupervised real-world SR adaptation.

Importing the package registers its losses, dataset and model into BasicSR's registries (after
:func:`kdsr_pdd.runtime.prepare_basicsr` has made BasicSR 1.4.2 ready).
"""
from kdsr_pdd.runtime import prepare_basicsr

prepare_basicsr()

from pdd_model import color, data, losses, models  # noqa: E402,F401  (register into BasicSR)
