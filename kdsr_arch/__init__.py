"""KDSR (ICLR 2023): knowledge-distilled implicit degradation representations for blind SR."""
from kdsr_pdd import compat as _compat

_compat.apply()

from kdsr_arch import archs, data, losses, models  # noqa: E402,F401  (register into BasicSR)
