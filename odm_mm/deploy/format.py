"""The ODM deployment artifact: bit packing and the on-disk container.

NumPy-only (no torch, no odm_mm training module): the exporter
(:mod:`odm_mm.deploy.export`) writes with it, the integer runtime
(:mod:`odm_mm.deploy.runtime`) reads with it.

An artifact is a folder with two files::

    OUT/manifest.json   what every tensor is (JSON, UTF-8)
    OUT/tensors.bin     all tensors back to back, no padding between them

``manifest.json`` has the keys ``format`` (``"odm_mm.deploy"``), ``version``
(:data:`FORMAT_VERSION`), ``generator`` (``module``, ``class``, ``kwargs``:
how to rebuild the FP32 network), ``blob`` (``file``, ``nbytes``,
``sha256``), ``tensors`` (name -> entry), ``fp32`` (names loaded as is into
the rebuilt generator's state dict), ``quant_layers`` (qualified conv name ->
quantization record, see :mod:`odm_mm.deploy.export`) and ``storage``.

A tensor entry is ``{"offset", "nbytes", "shape", "dtype", "bits"}``:

* ``dtype`` a NumPy dtype name (``"float32"``, ``"int64"``, ...): the
  tensor's C-order little-endian bytes, ``bits`` = 8 x itemsize;
* ``dtype == "packed"``: unsigned integer codes of ``bits`` (1..8) bits each,
  packed LSB first into a bit stream: code ``i`` occupies stream bits
  ``[i*bits, (i+1)*bits)`` with its least significant bit first, stream bit
  ``k`` is bit ``k % 8`` of byte ``k // 8`` (so four 2-bit codes
  ``c0..c3`` make the byte ``c0 | c1<<2 | c2<<4 | c3<<6``, and 3-bit codes
  straddle bytes). ``nbytes = ceil(numel * bits / 8)``; the unused high bits
  of the last byte are 0.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Iterable, Tuple

import numpy as np

__all__ = ['FORMAT_NAME', 'FORMAT_VERSION', 'MANIFEST', 'BLOB', 'pack_bits',
           'unpack_bits', 'BlobWriter', 'write_artifact', 'dumps_manifest',
           'read_artifact', 'artifact_nbytes']

FORMAT_NAME = 'odm_mm.deploy'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
BLOB = 'tensors.bin'


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integer codes into ``bits`` bits each (LSB first).

    Args:
        codes: Integer array of any shape; every value in ``[0, 2^bits-1]``.
        bits: Bits per code, 1..8.

    Returns:
        ``ceil(codes.size * bits / 8)`` bytes.

    Raises:
        ValueError: on a bit-width outside 1..8 or an out-of-range code.
    """
    if not 1 <= int(bits) <= 8:
        raise ValueError(f'pack_bits: bits must be in 1..8, got {bits}')
    flat = np.asarray(codes).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() > 2**bits - 1):
        raise ValueError(f'pack_bits: codes outside [0, {2**bits - 1}] '
                         f'(min {flat.min()}, max {flat.max()})')
    flat = flat.astype(np.uint8)
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder='little').tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as an int64 array."""
    if not 1 <= int(bits) <= 8:
        raise ValueError(f'unpack_bits: bits must be in 1..8, got {bits}')
    need = math.ceil(count * bits / 8)
    if len(data) != need:
        raise ValueError(f'unpack_bits: {count} codes of {bits} bits need '
                         f'{need} bytes, got {len(data)}')
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8),
                           bitorder='little')[:count * bits]
    weights = (1 << np.arange(bits, dtype=np.int64))
    return stream.reshape(count, bits).astype(np.int64) @ weights


class BlobWriter:
    """Collects tensors into one byte blob and their manifest entries."""

    def __init__(self) -> None:
        self._chunks = []
        self._offset = 0
        self.entries: Dict[str, Dict[str, Any]] = {}

    def _add(self, name: str, data: bytes, entry: Dict[str, Any]) -> None:
        if name in self.entries:
            raise ValueError(f'duplicate tensor name {name!r}')
        entry.update(offset=self._offset, nbytes=len(data))
        self.entries[name] = entry
        self._chunks.append(data)
        self._offset += len(data)

    def add_raw(self, name: str, array: np.ndarray) -> None:
        """Store an array as its little-endian C-order bytes."""
        arr = np.ascontiguousarray(array)
        dtype = arr.dtype.newbyteorder('<')
        self._add(name, arr.astype(dtype, copy=False).tobytes(),
                  dict(shape=list(arr.shape), dtype=arr.dtype.name,
                       bits=8 * arr.dtype.itemsize))

    def add_packed(self, name: str, codes: np.ndarray, bits: int) -> None:
        """Store unsigned integer codes packed at ``bits`` bits each."""
        codes = np.asarray(codes)
        self._add(name, pack_bits(codes, bits),
                  dict(shape=list(codes.shape), dtype='packed',
                       bits=int(bits)))

    def getvalue(self) -> bytes:
        """The concatenated blob."""
        return b''.join(self._chunks)


def write_artifact(out_dir: str, manifest: Dict[str, Any],
                   writer: BlobWriter) -> Dict[str, Any]:
    """Write ``manifest.json`` and ``tensors.bin`` into ``out_dir``.

    The ``format``, ``version``, ``tensors`` and ``blob`` keys of the
    manifest are filled here. Returns the manifest as written.
    """
    os.makedirs(out_dir, exist_ok=True)
    blob = writer.getvalue()
    manifest = dict(manifest)
    manifest.update(format=FORMAT_NAME, version=FORMAT_VERSION,
                    blob=dict(file=BLOB, nbytes=len(blob),
                              sha256=hashlib.sha256(blob).hexdigest()),
                    tensors=writer.entries)
    with open(os.path.join(out_dir, BLOB), 'wb') as f:
        f.write(blob)
    with open(os.path.join(out_dir, MANIFEST), 'w', encoding='utf-8') as f:
        f.write(dumps_manifest(manifest))
    return manifest


def dumps_manifest(manifest: Dict[str, Any]) -> str:
    """JSON text with one line per tensor / layer (readable and small)."""
    def one(value: Any) -> str:
        return json.dumps(value, separators=(',', ':'))

    lines = []
    for key, value in manifest.items():
        if isinstance(value, dict) and value and all(
                isinstance(v, dict) for v in value.values()):
            inner = ',\n'.join(f'  {one(k)}: {one(v)}'
                               for k, v in value.items())
            lines.append(f' {one(key)}: {{\n{inner}\n }}')
        else:
            lines.append(f' {one(key)}: {one(value)}')
    return '{\n' + ',\n'.join(lines) + '\n}\n'


def _decode(entry: Dict[str, Any], data: bytes) -> np.ndarray:
    shape = tuple(entry['shape'])
    count = int(np.prod(shape, dtype=np.int64))
    if entry['dtype'] == 'packed':
        return unpack_bits(data, int(entry['bits']), count).reshape(shape)
    dtype = np.dtype(entry['dtype']).newbyteorder('<')
    if count * dtype.itemsize != len(data):
        raise ValueError(f'tensor of shape {shape} and dtype '
                         f'{entry["dtype"]} needs {count * dtype.itemsize} '
                         f'bytes, the entry has {len(data)}')
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder('='))\
        .reshape(shape)


def read_artifact(path: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read an artifact folder.

    Args:
        path: The artifact folder (or its ``manifest.json``).

    Returns:
        ``(manifest, tensors)``; packed codes are unpacked to int64 arrays
        (unsigned codes, before any zero point), raw tensors keep their dtype.

    Raises:
        ValueError: on a foreign format, newer version, or a blob whose size
            or SHA-256 disagrees with the manifest.
    """
    folder = os.path.dirname(path) if path.endswith(MANIFEST) else path
    with open(os.path.join(folder, MANIFEST), encoding='utf-8') as f:
        manifest = json.load(f)
    if manifest.get('format') != FORMAT_NAME:
        raise ValueError(f'{folder}: not an {FORMAT_NAME} artifact')
    if int(manifest.get('version', -1)) > FORMAT_VERSION:
        raise ValueError(f'{folder}: artifact version {manifest["version"]} '
                         f'is newer than this reader ({FORMAT_VERSION})')
    with open(os.path.join(folder, manifest['blob']['file']), 'rb') as f:
        blob = f.read()
    if len(blob) != manifest['blob']['nbytes'] or \
            hashlib.sha256(blob).hexdigest() != manifest['blob']['sha256']:
        raise ValueError(f'{folder}: {manifest["blob"]["file"]} does not '
                         'match the manifest (size or sha256)')
    tensors = {}
    for name, entry in manifest['tensors'].items():
        start = int(entry['offset'])
        tensors[name] = _decode(entry, blob[start:start + entry['nbytes']])
    return manifest, tensors


def artifact_nbytes(path: str, files: Iterable[str] = (MANIFEST, BLOB)
                    ) -> int:
    """Total size in bytes of the artifact's files on disk."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in files)
