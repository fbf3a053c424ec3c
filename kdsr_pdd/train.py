"""Training entry point: ``python -m kdsr_pdd.train -opt options/....yml [--launcher pytorch] [--auto_resume]``.

Registers the plugin, then hands over to BasicSR's own ``train_pipeline``; experiments are written
under the current working directory.
"""
import os

import kdsr_pdd  # noqa: F401  (mends BasicSR and registers our components)
from kdsr_pdd.cli import run_pipeline


def main():
    from basicsr.train import train_pipeline
    run_pipeline(train_pipeline, os.getcwd())


if __name__ == '__main__':
    main()
