"""``python -m kdsr_pdd <command> ...``: the same as the ``kdsr-pdd`` console script."""
import sys

from kdsr_pdd.commands import main

sys.exit(main())
