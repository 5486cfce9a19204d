"""odm_mm: ODM quantization-aware training for mmagic (OpenMMLab).

Install the pinned OpenMMLab stack with ``make install`` (see README: mmcv
2.1.0 must be compiled and mmagic installed without its dependencies), then
``pip install -e .``. ``install_requires`` names only what the torch-only
algorithm layer needs, so ``pip install .`` never pulls a second torch or
numpy 2 into a working environment; the OpenMMLab extras are
``pip install .[mm]`` for users whose stack resolves cleanly.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, 'odm_mm', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_reqs(name):
    out = []
    with open(os.path.join(HERE, 'requirements', name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                out.append(line)
    return out


setup(
    name='odm_mm',
    version=read_version(),
    description='ODM: overcoming distribution mismatch in quantizing SR '
    'networks, as an mmagic extension',
    long_description=open(os.path.join(HERE, 'README.md')).read()
    if os.path.exists(os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['odm_mm', 'odm_mm.*']),
    python_requires='>=3.8',
    # torch-only layer: torch and numpy (numpy<2: mmagic 1.2 uses np.bool8).
    install_requires=['torch>=1.13', 'numpy<2'],
    extras_require={
        'mm': read_reqs('runtime.txt'),
        'tests': read_reqs('tests.txt'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
