"""Shared pytest fixtures: tiny SR data roots and repository paths.

``tiny_data_root`` builds, once per session, a data root with the layout of
``../shared/data`` (docs/data.md) from generated images:

* ``Set5``, ``Set14``, ``B100``: 2 images each, HR 50x38 (H x W, not a
  multiple of 3 or 4, so HR must be cropped to ``LR * scale``), with
  ``LR_bicubic/X{2,3,4}/<name>x<s>.png`` of ``floor(HR / s)`` pixels. Set14's
  second image is single-channel, like ``bridge.png``.
* ``T91``: three HR images >= 96 px (the T91 HR patch) and one 40 px image
  that training must skip.

Urban100 is absent on purpose. Use :func:`make_sr_root` for a private copy
that a test may damage.

``--shuffle-seed N`` runs the suite in a seeded random order: the modules
in a shuffled order, and the tests of each module shuffled among
themselves (module-scoped fixtures are then still built once per module).
It shows that no test depends on another having run before it
(docs/test_variants.md).
"""
import os.path as osp
import random
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# the benchmark harness (tools/odm_bench) is not part of the package
sys.path.insert(0, str(REPO / 'tools'))
VENV_PYTHON = REPO / '.venv' / 'bin' / 'python'
SHARED_DATA = REPO.parent / 'shared' / 'data'

TEST_SETS = ('Set5', 'Set14', 'B100')
SCALES = (2, 3, 4)
HR_SHAPE = (50, 38)  # H, W
T91_SIZES = ((100, 120), (110, 96), (128, 128), (40, 40))  # last: too small


def pytest_addoption(parser) -> None:
    parser.addoption('--shuffle-seed', type=int, default=None,
                     help='run modules, and the tests within each module, '
                     'in an order shuffled with this seed')


def pytest_collection_modifyitems(config, items) -> None:
    seed = config.getoption('--shuffle-seed')
    if seed is None:
        return
    modules = {}
    for item in items:
        modules.setdefault(item.nodeid.split('::')[0], []).append(item)
    order = list(modules)
    random.Random(seed).shuffle(order)
    items[:] = []
    for name in order:  # each module's own stream: an order reproduces
        group = modules[name]  # when other modules gain or lose tests
        random.Random(f'{seed}:{name}').shuffle(group)
        items.extend(group)


def pytest_report_header(config) -> str:
    seed = config.getoption('--shuffle-seed')
    return [f'shuffled order, seed {seed}'] if seed is not None else []


def smooth_image(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """A smooth random uint8 image (low-frequency noise, upsampled)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(max(h // 8, 2), max(w // 8, 2),
                                      channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img.reshape(h, w, channels)
    img += rng.normal(0, 4, size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def write_pair(root: Path, set_name: str, name: str, hr: np.ndarray,
               scales: Sequence[int] = SCALES) -> None:
    """Writes ``HR/<name>.png`` and ``LR_bicubic/X<s>/<name>x<s>.png``."""
    (root / set_name / 'HR').mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / set_name / 'HR' / f'{name}.png'), hr)
    for s in scales:
        h, w = hr.shape[0] // s, hr.shape[1] // s
        lr = cv2.resize(hr[:h * s, :w * s], (w, h),
                        interpolation=cv2.INTER_AREA)
        folder = root / set_name / 'LR_bicubic' / f'X{s}'
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f'{name}x{s}.png'), lr)


def make_sr_root(root: Path) -> Path:
    """Creates a tiny SR data root (see module docstring) under ``root``."""
    seed = 0
    for set_name in TEST_SETS:
        for i in range(2):
            gray = set_name == 'Set14' and i == 1
            hr = smooth_image(*HR_SHAPE, seed=seed, channels=1 if gray else 3)
            write_pair(root, set_name, f'img{i}', hr)
            seed += 1
    (root / 'T91').mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(T91_SIZES):
        cv2.imwrite(str(root / 'T91' / f't{i}.png'),
                    smooth_image(h, w, seed=100 + i))
    return root


@pytest.fixture(autouse=True)
def _mmagic_default_scope():
    """Every test starts with mmagic as the default registry scope, and
    what it changes (an in-process Runner makes its own scope current) is
    undone afterwards: no test depends on which test ran before it."""
    try:
        from mmengine.registry import DefaultScope
    except ImportError:  # torch-only environments
        yield
        return
    with DefaultScope.overwrite_default_scope('mmagic'):
        yield


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory) -> Path:
    """A session-wide tiny data root; tests must not modify it."""
    return make_sr_root(tmp_path_factory.mktemp('sr_data'))


@pytest.fixture
def fresh_data_root(tmp_path) -> Path:
    """A tiny data root private to one test, free to damage."""
    return make_sr_root(tmp_path / 'data')


@pytest.fixture(scope='session')
def shared_data_root() -> Path:
    """The real ``../shared/data``; skips the test when it is absent."""
    if not osp.isdir(SHARED_DATA / 'Set5' / 'HR'):
        pytest.skip(f'real SR data not found at {SHARED_DATA}')
    return SHARED_DATA


@pytest.fixture(scope='session')
def venv_python() -> str:
    """The interpreter to run tools/*.py with (the venv's, else current)."""
    import sys
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
