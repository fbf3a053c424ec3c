"""Files that ship with the package: the option files (``options/`` of the repository, ``kdsr_pdd/options`` in an
installed wheel)."""
from pathlib import Path


def options_dir():
    """The folder of the shipped option files: inside the installed package, else the repository's ``options/``."""
    packaged = Path(__file__).resolve().parent / 'options'
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / 'options'
