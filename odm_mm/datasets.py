"""``SRFolderDataset``: mmagic's ``BasicImageDataset`` that checks its files.

mmagic's :class:`~mmagic.datasets.BasicImageDataset` lists a folder (or an
annotation file) and fails late and obscurely when the data is missing (an
empty dataset, or a ``None`` image deep in a worker). This thin subclass
loads exactly the same ``data_list`` but, when the dataset is built, checks:

* the data root, every ``data_prefix`` folder and the annotation file exist,
  and the folders hold images (else one error naming the path, the expected
  layout, e.g. ``Set5/HR/<name>.png with Set5/LR_bicubic/X4/<name>x4.png``,
  and how to set ``ODM_DATA_ROOT``);
* every listed LR has its HR (and, for folder listings, every file of the
  other folders has its partner);
* with ``check_images=True``: every image opens (PIL header + ``verify``);
  corrupt files are named in the error;
* with ``scale``: ``LR == floor(HR / scale)`` in both dimensions, the
  pairing rule of the EDSR benchmark sets (HR is then cropped top-left to
  ``LR * scale`` by mmagic's ``ModCrop`` in the pipeline);
* with ``min_gt_size``: HR images smaller than ``min_gt_size`` in height or
  width are dropped (a random HR patch of that size cannot be cut from
  them) and their number is logged; it is an error if none is left.

A missing folder raises only when the dataset is built (``Runner.test()`` /
``train()``), so configs that name absent sets (Urban100) parse and build.
"""
import logging
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.logging import print_log
from PIL import Image

from mmagic.datasets import BasicImageDataset
from mmagic.registry import DATASETS

from .data_root import how_to_set_root

_MAX_LISTED = 10  # problems shown per error message
Size = Tuple[int, int]  # (height, width)


def _listing(items: List[str]) -> str:
    """Formats at most ``_MAX_LISTED`` problem lines."""
    more = len(items) - _MAX_LISTED
    lines = [f'  - {s}' for s in items[:_MAX_LISTED]]
    if more > 0:
        lines.append(f'  ... and {more} more')
    return '\n'.join(lines)


@DATASETS.register_module()
class SRFolderDataset(BasicImageDataset):
    """mmagic's BasicImageDataset with early, explicit data checks.

    Args:
        scale: SR factor; when given (and both ``img`` and ``gt`` are used),
            each LR must be ``floor(HR / scale)`` pixels in H and W.
        min_gt_size: Drop HR images whose height or width is below this
            (0: keep all). Use the HR patch size of the training pipeline.
        check_images: Open and ``verify`` every image when building.
        **kwargs: Passed to :class:`~mmagic.datasets.BasicImageDataset`.
    """

    def __init__(self,
                 *args,
                 scale: Optional[int] = None,
                 min_gt_size: int = 0,
                 check_images: bool = True,
                 **kwargs) -> None:
        if scale is not None and (not isinstance(scale, int) or scale < 1):
            raise ValueError(f'scale must be a positive int, got {scale!r}')
        if not isinstance(min_gt_size, int) or min_gt_size < 0:
            raise ValueError(
                f'min_gt_size must be an int >= 0, got {min_gt_size!r}')
        self.scale = scale
        self.min_gt_size = min_gt_size
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    # -- messages ---------------------------------------------------------
    def _name(self) -> str:
        name = self.metainfo.get('dataset_type', type(self).__name__)
        return f'{name} (x{self.scale})' if self.scale else str(name)

    def _expected_layout(self) -> str:
        parts = []
        for key, folder in self.data_prefix.items():
            tmpl = self.filename_tmpl.get(key, '{}').format('<name>')
            parts.append(f'{folder}/{tmpl}.png ({key})')
        text = ' with '.join(parts)
        if self.use_ann_file:
            text += f', names listed in {self.ann_file}'
        return text

    def _fail(self, exc_type: type, problem: str) -> None:
        raise exc_type(f'SR dataset {self._name()}: {problem}\n'
                       f'Expected: {self._expected_layout()}.\n'
                       f'{how_to_set_root()}')

    # -- checks -----------------------------------------------------------
    def _check_folders(self) -> None:
        root = self.data_root
        if root and not osp.isdir(root):
            self._fail(FileNotFoundError,
                       f'data root folder {root} does not exist.')
        for key, folder in self.data_prefix.items():
            if not osp.isdir(folder):
                self._fail(FileNotFoundError,
                           f'{key} folder {folder} does not exist.')
        if self.use_ann_file and not osp.isfile(self.ann_file):
            self._fail(FileNotFoundError,
                       f'annotation file {self.ann_file} does not exist.')

    def _check_pairs(self, data_list: List[dict]) -> None:
        missing = [
            f'{item["key"]}: {key} file {item[f"{key}_path"]} is missing'
            for item in data_list for key in self.data_prefix
            if not osp.isfile(item[f'{key}_path'])
        ]
        if not self.use_ann_file:  # files that nothing in data_list uses
            for key, folder in self.data_prefix.items():
                if key == self.search_key:
                    continue
                used = {osp.basename(d[f'{key}_path']) for d in data_list}
                listed = self.file_backend.list_dir_or_file(
                    folder, list_dir=False, suffix=self.img_suffix)
                missing += [
                    f'{key} file {osp.join(folder, f)} has no '
                    f'{self.search_key} partner' for f in sorted(listed)
                    if f not in used
                ]
        if missing:
            self._fail(FileNotFoundError,
                       'unpaired files:\n' + _listing(missing))

    def _read_sizes(self, data_list: List[dict]) -> Dict[str, Size]:
        """Returns ``{path: (h, w)}``; raises naming unreadable images."""
        sizes, bad = {}, []
        keys = list(self.data_prefix)
        if not self.check_images:
            keys = ['gt'] if self.min_gt_size and 'gt' in keys else []
        for item in data_list:
            for key in keys:
                path = item[f'{key}_path']
                try:
                    with Image.open(path) as img:
                        w, h = img.size
                        if self.check_images:
                            img.verify()
                except Exception as err:  # PIL raises many types
                    bad.append(f'{path}: {type(err).__name__}: {err}')
                    continue
                sizes[path] = (h, w)
        if bad:
            self._fail(ValueError,
                       'unreadable or corrupt images:\n' + _listing(bad))
        return sizes

    def _check_scale(self, data_list: List[dict], sizes: dict) -> None:
        if not (self.scale and {'img', 'gt'} <= set(self.data_prefix)):
            return
        s, wrong = self.scale, []
        for item in data_list:
            lr = sizes.get(item['img_path'])
            hr = sizes.get(item['gt_path'])
            if lr and hr and (lr[0] != hr[0] // s or lr[1] != hr[1] // s):
                wrong.append(f'{item["img_path"]} is {lr[0]}x{lr[1]} (HxW) '
                             f'but its HR {item["gt_path"]} is {hr[0]}x'
                             f'{hr[1]}: expected {hr[0] // s}x{hr[1] // s}')
        if wrong:
            self._fail(
                ValueError, f'LR size is not floor(HR / {s}) (wrong scale '
                'folder or not the EDSR-benchmark pairing):\n' +
                _listing(wrong))

    def _drop_small(self, data_list: List[dict], sizes: dict) -> List[dict]:
        if not self.min_gt_size:
            return data_list
        m = self.min_gt_size
        kept = [d for d in data_list if min(sizes[d['gt_path']]) >= m]
        dropped = len(data_list) - len(kept)
        if not kept:
            self._fail(
                ValueError, f'all {len(data_list)} HR images are smaller '
                f'than min_gt_size={m} px (the HR training patch).')
        if dropped:
            print_log(
                f'SR dataset {self._name()}: skipped {dropped} of '
                f'{len(data_list)} HR images smaller than {m}x{m} px '
                '(the HR training patch); training on the other '
                f'{len(kept)}.',
                logger='current',
                level=logging.WARNING)
        return kept

    def load_data_list(self) -> List[dict]:
        """Lists the samples as mmagic does, after checking the files.

        Returns:
            The ``data_list`` of :class:`BasicImageDataset`, without the HR
            images smaller than ``min_gt_size``.
        """
        self._check_folders()
        data_list = super().load_data_list()
        if not data_list:
            folder = self.ann_file if self.use_ann_file else \
                self.data_prefix[self.search_key]
            self._fail(FileNotFoundError, f'no images found in {folder}.')
        self._check_pairs(data_list)
        sizes = self._read_sizes(data_list)
        self._check_scale(data_list, sizes)
        return self._drop_small(data_list, sizes)
