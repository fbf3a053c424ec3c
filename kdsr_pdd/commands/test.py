"""``kdsr-pdd test -opt OPTIONS.yml [--force_yml k:s=v ...] [--check]``.

Checks the option file against its model's typed schema, then runs BasicSR's ``test_pipeline``;
results (logs, metrics, SR images) are written to ``results/<name>/`` under the current working directory.
"""
import sys

from kdsr_pdd.commands.cli import run_basicsr_pipeline


def main(argv=None):
    return run_basicsr_pipeline('test', argv)


if __name__ == '__main__':
    sys.exit(main())
