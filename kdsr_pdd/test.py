"""Test entry point: ``python -m kdsr_pdd.test -opt options/test/....yml``.

Registers the plugin, then hands over to BasicSR's own ``test_pipeline``; results are written under
``results/`` in the current working directory.
"""
import os

import kdsr_pdd  # noqa: F401  (mends BasicSR and registers our components)
from kdsr_pdd.cli import run_pipeline


def main():
    from basicsr.test import test_pipeline
    run_pipeline(test_pipeline, os.getcwd())


if __name__ == '__main__':
    main()
