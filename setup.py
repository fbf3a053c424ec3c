"""Distribution of the KDSR / PDD plugin for BasicSR 1.4.2."""
from setuptools import find_packages, setup

setup(
    name='kdsr-pdd',
    version='0.1.0',
    description='BasicSR plugin: KDSR (ICLR 2023) and PDD (ECCV 2024) knowledge-distillation super-resolution',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kdsr_pdd', 'kdsr_pdd.*', 'kdsr_arch', 'kdsr_arch.*', 'pdd_model', 'pdd_model.*']),
    python_requires='>=3.9',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision',
        'lpips',
        'pywavelets',
        'pyiqa==0.1.16',  # kdsr_pdd.metrics relies on its LPIPS/DISTS backbone loading and NRQM layout
        'scikit-image',
        'opencv-python',
        'matplotlib',
        'numpy',
        'onnx',
        'onnxruntime',
        'pyyaml',
        'tqdm',
    ],
    extras_require={'test': ['pytest', 'scipy']},
    entry_points={
        'console_scripts': [
            'kdsr-pdd-train=kdsr_pdd.train:main',
            'kdsr-pdd-test=kdsr_pdd.test:main',
            'kdsr-pdd-infer=kdsr_pdd.infer:main',
            'kdsr-pdd-report=kdsr_pdd.report:main',
            'kdsr-pdd-export=kdsr_pdd.export:main',
            'kdsr-pdd-benchmarks=kdsr_pdd.benchmarks:main',
            'kdsr-pdd-tables=kdsr_pdd.tables:main',
            'kdsr-pdd-figures=kdsr_pdd.figures:main',
        ],
    },
)
