"""LeNet-300-100 and LeNet-5 for MNIST (28x28 grey images, 10 classes).

Both are the variants used in the pruning literature (LeCun et al. 1998; Han et al. 2015,
"Learning both Weights and Connections"; RigL, Evci et al. 2020, appendix): LeNet-300-100
is the 784-300-100-10 perceptron, LeNet-5 is the Caffe variant with 20 and 50 filters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainers.models._width import scaled


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 network with ReLUs.

    Input (B, 1, 28, 28) or any (B, ...) with 784 features per sample; output logits
    (B, num_classes). ``width`` scales the hidden widths 300 and 100.
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        hidden1, hidden2 = scaled(300, width), scaled(100, width)
        self.fc1 = nn.Linear(28 * 28, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 5x5 (20) - maxpool 2 - conv 5x5 (50) - maxpool 2 - fc 500 - fc.

    Input (B, 1, 28, 28); feature maps 24x24x20, 12x12x20, 8x8x50, 4x4x50 (800 features);
    output logits (B, num_classes). ``width`` scales 20, 50 and 500.
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, hidden = scaled(20, width), scaled(50, width), scaled(500, width)
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
