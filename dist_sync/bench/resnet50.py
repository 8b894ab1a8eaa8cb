"""ResNet-50's parameter tensors as the fusion benchmarks reduce them.

Self-contained (numpy only, no relative imports), so a script outside dist_sync can load this
file by path without importing dist_sync: benchmarks/horovod_api.py runs the same workload in
Horovod's environment.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

RESNET50_TENSORS = 161
RESNET50_PARAMETERS = 25_557_032


def resnet50_parameter_shapes() -> List[Tuple[int, ...]]:
    """Shapes of ResNet-50's parameters in ``model.parameters()`` order (torchvision layout):
    the 7x7 stem convolution and its batch norm, four stages of [3, 4, 6, 3] bottleneck blocks
    (1x1, 3x3, 1x1 convolutions, each followed by a batch norm's weight and bias; expansion 4;
    the first block of each stage adds a 1x1 projection with its batch norm), then the
    2048 -> 1000 classifier's weight and bias. Convolutions have no bias."""
    def conv_bn(out_channels: int, in_channels: int, kernel: int) -> List[Tuple[int, ...]]:
        return [(out_channels, in_channels, kernel, kernel), (out_channels,), (out_channels,)]

    shapes = conv_bn(64, 3, 7)
    in_channels = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for block in range(blocks):
            shapes += conv_bn(width, in_channels, 1)
            shapes += conv_bn(width, width, 3)
            shapes += conv_bn(width * 4, width, 1)
            if block == 0:
                shapes += conv_bn(width * 4, in_channels, 1)  # projection shortcut
            in_channels = width * 4
    shapes += [(1000, 2048), (1000,)]
    count = sum(int(np.prod(s)) for s in shapes)
    assert len(shapes) == RESNET50_TENSORS, len(shapes)
    assert count == RESNET50_PARAMETERS, count
    return shapes


def scaled_counts(scale: float) -> List[int]:
    """Element counts of the 161 tensors, each multiplied by ``scale`` (at least 1 element), so
    tests can run the same workload shape in a fraction of the time."""
    return [max(1, int(round(int(np.prod(s)) * scale))) for s in resnet50_parameter_shapes()]
