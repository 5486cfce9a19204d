"""JSON files of the harness: atomic writes (no OpenMMLab import)."""
from __future__ import annotations

import json
import os
import os.path as osp

__all__ = ['dump_json', 'load_json']


def dump_json(path: str, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_json(path: str):
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)
