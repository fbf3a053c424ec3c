"""``kdsr-pdd train -opt OPTIONS.yml [--auto_resume] [--launcher pytorch] [--force_yml k:s=v ...] [--check]``.

Checks the option file against its model's typed schema, then runs BasicSR's ``train_pipeline``;
experiments are written to ``experiments/<name>/`` under the current working directory.
"""
import sys

from kdsr_pdd.commands.cli import run_basicsr_pipeline


def main(argv=None):
    return run_basicsr_pipeline('train', argv)


if __name__ == '__main__':
    sys.exit(main())
