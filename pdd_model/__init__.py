"""PDD (ECCV 2024): pairwise distance distillation for unsupervised real-world SR adaptation."""
import kdsr_pdd  # noqa: F401  (mends BasicSR 1.4.2 before the modules below import it)
from pdd_model import color, data, losses, models  # noqa: F401  (register into BasicSR)
