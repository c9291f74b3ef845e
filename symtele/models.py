"""Convolutional and residual networks for the experiments and benchmarks.

They are defined here so that nothing needs torchvision (whose PyPI wheel is built against the CUDA torch).

* :func:`digits_mlp_net`: a ReLU MLP for scikit-learn's 8×8 digits as 64 features;
* :func:`leaky_mlp`: the bias-free LeakyReLU(0.1) MLPs of Zhao et al. (2024) (784-16-10-10 for MNIST);
* :func:`digits_cnn`: a small CNN for the same digits as images;
* :func:`digits_resnet`: a small ResNet for the same images (BasicBlocks with BatchNorm);
* :func:`resnet18`: torchvision's ResNet-18 architecture with torchvision's module names (``conv1``,
  ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``, ...), so that what ``symtele`` finds in
  it is what it finds in a user's ``torchvision.models.resnet18()``.
"""

from __future__ import annotations

from torch import nn


def digits_mlp_net(hidden: tuple[int, ...] = (32, 32), inputs: int = 64, classes: int = 10) -> nn.Sequential:
    """A ReLU MLP for the digits' 64 pixels as features, every layer with a bias.

    ``inputs → Linear(h₁) → ReLU → … → Linear(h_k) → ReLU → Linear(classes)``.

    Args:
        hidden: the hidden widths ``(h₁, …, h_k)``.
        inputs: the input features.
        classes: outputs.

    Returns:
        The network (initialised by torch's default, from the global random state).
    """
    widths = [inputs, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], classes))


def leaky_mlp(widths: tuple[int, ...] = (784, 16, 10, 10), negative_slope: float = 0.1) -> nn.Sequential:
    """A bias-free LeakyReLU MLP, the network of Zhao et al. (2024)'s generalisation experiments.

    ``Linear(w₀→w₁, bias=False) → LeakyReLU → … → Linear(w_{k−1}→w_k, bias=False)``.

    Args:
        widths: ``(inputs, hidden…, outputs)``, at least two entries (784-16-10-10 for MNIST; 40-16-10-10 is
            the same shape for MNIST-1D).
        negative_slope: LeakyReLU's slope for negative inputs.

    Returns:
        The network (initialised by torch's default, from the global random state).

    Raises:
        ValueError: fewer than two widths, or a width below 1.
    """
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"Invalid widths: {widths!r} (need at least two positive integers)")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b, bias=False))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers)


def digits_cnn(channels: tuple[int, int] = (8, 16), hidden: int = 32, classes: int = 10) -> nn.Sequential:
    """A small CNN for 1×8×8 digits, every layer with a bias.

    ``1×8×8 → conv3×3(c₁) → ReLU → conv3×3(c₂) → ReLU → maxpool 2 → flatten → Linear(hidden) → ReLU →
    Linear(classes)``.

    Args:
        channels: ``(c₁, c₂)``, the two convolutions' output channels.
        hidden: the width of the hidden linear layer.
        classes: outputs.

    Returns:
        The network (initialised by torch's default, from the global random state).
    """
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 4 * 4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is a 1×1 convolution and BatchNorm (``downsample``) when the stride or the width changes,
    else the identity.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: the first convolution's (and the shortcut's) stride.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x):
        """The block's output.

        Args:
            x: a batch of feature maps, ``(n, inplanes, h, w)``.

        Returns:
            ``(n, planes, h / stride, w / stride)``.
        """
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet with BasicBlocks, module names included.

    A stem (``conv1``, ``bn1``, ``relu``, ``maxpool``), stages ``layer1``, ``layer2``, … of ``blocks[i]``
    blocks with ``widths[i]`` channels (stride 2 from the second stage on), ``avgpool`` and ``fc``.

    Args:
        blocks: BasicBlocks per stage.
        widths: channels per stage.
        classes: outputs.
        in_channels: the images' channels.
        stem: ``"imagenet"`` (a 7×7 stride-2 convolution and a max pool) or ``"small"`` (a 3×3 stride-1
            convolution, no pool, for 8×8 images).
    """

    def __init__(self, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), classes=10, in_channels=3, stem="imagenet"):
        super().__init__()
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        for i, (n, width) in enumerate(zip(blocks, widths)):
            setattr(self, f"layer{i + 1}", self._stage(width, n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[len(blocks) - 1], classes)
        self.stages = len(blocks)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        """The class scores.

        Args:
            x: a batch of images, ``(n, in_channels, h, w)``.

        Returns:
            ``(n, classes)``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        return self.fc(x)


def resnet18(classes: int = 10, in_channels: int = 3) -> ResNet:
    """The architecture of torchvision's ``resnet18`` (11.2 M parameters with 10 classes), module names included.

    Args:
        classes: outputs.
        in_channels: the images' channels.

    Returns:
        The network.
    """
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), classes, in_channels)


def digits_resnet(widths: tuple[int, int] = (8, 16), classes: int = 10) -> ResNet:
    """A two-stage ResNet for 1×8×8 digits, ``avgpool`` and ``fc``.

    One BasicBlock per stage, the second one downsampling to 4×4 through a 1×1 convolution and BatchNorm
    shortcut.

    Args:
        widths: channels of the two stages.
        classes: outputs.

    Returns:
        The network.
    """
    return ResNet((1, 1), widths, classes, in_channels=1, stem="small")
