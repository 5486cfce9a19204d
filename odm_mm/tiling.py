"""Tiled super-resolution: bounded memory for large images (torch only).

An SR network's activations at the output resolution dominate its memory
(EDSR-baseline x4 at a 1920x1080 output: 64- and 256-channel maps of
960x540 and 1920x1080 pixels, over a GB in float32). :func:`tiled_upscale`
runs the network on LR tiles of ``tile`` x ``tile`` pixels, each extended by
``overlap`` pixels of real image context on every side that has a
neighbour, and keeps only the tile's own part of each output, so the peak
memory is that of one ``tile + 2 overlap`` input.

A pixel of the output depends on the LR pixels within the network's
receptive field; when ``overlap`` is at least its radius, the tiled output
equals the untiled one (up to float rounding: the convs run on other
shapes). Every layer must be local: networks whose activation quantizers
normalise with statistics of the whole image (DAQ's dynamic per-channel
ranges) give tile-dependent results; use ``tile=0`` for them.
"""
from __future__ import annotations

from typing import Callable, Iterator, Tuple

import torch
from torch import Tensor

__all__ = ['tiled_upscale', 'tile_windows']

Window = Tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


def tile_windows(height: int, width: int, tile: int,
                 overlap: int) -> Iterator[Tuple[Window, Window]]:
    """``(own, context)`` LR windows covering a ``height`` x ``width`` image.

    ``own`` tiles partition the image; ``context`` is ``own`` grown by
    ``overlap`` pixels, clipped to the image.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f'tile must be >= 1 and overlap >= 0, got tile='
                         f'{tile}, overlap={overlap}')
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            yield (y0, y1, x0, x1), (max(y0 - overlap, 0),
                                     min(y1 + overlap, height),
                                     max(x0 - overlap, 0),
                                     min(x1 + overlap, width))


def _scale_of(inp: Tensor, out: Tensor) -> int:
    h, w = inp.shape[-2:]
    oh, ow = out.shape[-2:]
    if oh % h or ow % w or oh // h != ow // w:
        raise ValueError(f'the network maps a {h}x{w} input to {oh}x{ow}: '
                         'not an integer upscaling factor')
    return oh // h


@torch.no_grad()
def tiled_upscale(net: Callable[[Tensor], Tensor], x: Tensor,
                  tile: int = 128, overlap: int = 40) -> Tensor:
    """Upscale ``x`` (N, C, H, W) with ``net``, tile by tile.

    Args:
        net: Maps an LR batch to its SR batch (any integer scale; read
            from the first tile).
        x: The LR images.
        tile: Tile size in LR pixels; 0 (or an image no larger than one
            tile) runs ``net`` on the whole image.
        overlap: LR pixels of context added on each inner side of a tile;
            >= the receptive-field radius makes the result equal the
            untiled one (EDSR-baseline: 36 px; the default is 40).

    Returns:
        The SR images, (N, C_out, H * scale, W * scale), on ``x``'s device
        and dtype of ``net``'s output.
    """
    if x.dim() != 4:
        raise ValueError(f'expected an (N, C, H, W) batch, got shape '
                         f'{tuple(x.shape)}')
    height, width = x.shape[-2:]
    if tile <= 0 or (height <= tile and width <= tile):
        return net(x)
    result = None
    scale = 0
    for (y0, y1, x0, x1), (ya, yb, xa, xb) in tile_windows(
            height, width, tile, overlap):
        part = x[..., ya:yb, xa:xb]
        sr = net(part)
        if result is None:
            scale = _scale_of(part, sr)
            result = sr.new_empty(sr.shape[0], sr.shape[1], height * scale,
                                  width * scale)
        s = scale
        result[..., y0 * s:y1 * s, x0 * s:x1 * s] = sr[
            ..., (y0 - ya) * s:(y1 - ya) * s, (x0 - xa) * s:(x1 - xa) * s]
        del sr
    return result
