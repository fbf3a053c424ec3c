"""KDSR (ICLR 2023): knowledge-distilled implicit degradation representations for blind SR."""
import kdsr_pdd  # noqa: F401  (mends BasicSR 1.4.2 before the modules below import it)
from kdsr_arch import archs, data, losses, models  # noqa: F401  (register into BasicSR)
