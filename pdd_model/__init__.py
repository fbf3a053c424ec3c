"""PDD (ECCV 2024): pairwise distance distillation for unsupervised real-world SR adaptation."""
from kdsr_pdd import compat as _compat

_compat.apply()

from pdd_model import color, data, losses, models  # noqa: E402,F401  (register into BasicSR)
