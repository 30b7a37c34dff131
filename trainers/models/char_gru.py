"""Character-level GRU language model over bytes (RigL, Evci et al. 2020, section 4.3).

The paper's WikiText-103 model (appendix): a shared embedding of width 128 (the input
embedding is also the output projection), a GRU of 512 units and a readout of two layers
of 256 and 128 units. The RNN is written gate by gate so that each of the six gate weight matrices is its own
``nn.Linear`` and hence its own masked layer (SPEC section 1), as in the paper's
WikiText-103 experiments. The equations are those of ``torch.nn.GRU`` (Cho et al. 2014):

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from trainers.models._width import scaled

VOCAB_SIZE = 256


class GateGRU(nn.Module):
    """One GRU layer with a separate ``nn.Linear`` per gate, batch first.

    Input-side gates ``input_r``, ``input_z``, ``input_n``: Linear(input_size, hidden_size),
    applied to the whole sequence at once. Hidden-side gates ``hidden_r``, ``hidden_z``,
    ``hidden_n``: Linear(hidden_size, hidden_size), called once per time step. Parameters
    are initialised U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in ``torch.nn.GRU``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input_r = nn.Linear(input_size, hidden_size)
        self.input_z = nn.Linear(input_size, hidden_size)
        self.input_n = nn.Linear(input_size, hidden_size)
        self.hidden_r = nn.Linear(hidden_size, hidden_size)
        self.hidden_z = nn.Linear(hidden_size, hidden_size)
        self.hidden_n = nn.Linear(hidden_size, hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the sequence ``x`` (B, T, input_size) from state ``h`` (B, hidden_size).

        ``h`` defaults to zeros. Returns every hidden state (B, T, hidden_size) and the
        last one (B, hidden_size).
        """
        x_r, x_z, x_n = self.input_r(x), self.input_z(x), self.input_n(x)
        if h is None:
            h = x_r.new_zeros(x.shape[0], self.hidden_size)
        states = []
        for t in range(x.shape[1]):
            r = torch.sigmoid(x_r[:, t] + self.hidden_r(h))
            z = torch.sigmoid(x_z[:, t] + self.hidden_z(h))
            n = torch.tanh(x_n[:, t] + r * self.hidden_n(h))
            h = torch.lerp(n, h, z)
            states.append(h)
        return torch.stack(states, dim=1), h


class CharGRU(nn.Module):
    """Embedding(256, 128) - GRU(512) - Linear(512, 256) - ReLU - Linear(256, 128) - logits.

    Input tokens (B, T) int64 in [0, 256); output next-byte logits (B, T, 256). The logits
    are the readout (B, T, 128) times the embedding matrix, plus a bias: ``out`` is an
    ``nn.Linear`` whose weight *is* ``embedding.weight`` (tied), so FLOP counting sees the
    projection as a layer while the shared matrix, an embedding, is never masked (SPEC §1).
    ``width`` scales every hidden width (128, 512, 256); the 256 bytes in and out stay.
    The paper does not say whether the readout's second layer has a nonlinearity; it is
    linear here, a projection into the embedding space. The embedding starts N(0, 1/128)
    (the paper gives no initialisation).
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = VOCAB_SIZE) -> None:
        super().__init__()
        if num_classes != VOCAB_SIZE:
            raise ValueError(
                f"CharGRU ties its output projection to the {VOCAB_SIZE}-byte embedding, so "
                f"num_classes must be {VOCAB_SIZE}, got {num_classes}"
            )
        embed, hidden, readout = scaled(128, width), scaled(512, width), scaled(256, width)
        self.embedding = nn.Embedding(VOCAB_SIZE, embed)
        self.gru = GateGRU(embed, hidden)
        self.fc1 = nn.Linear(hidden, readout)
        self.fc2 = nn.Linear(readout, embed)
        self.out = nn.Linear(embed, VOCAB_SIZE)
        self.out.weight = self.embedding.weight
        # N(0, 1/embed) rather than nn.Embedding's N(0, 1): the matrix is also the output
        # projection, and unit-variance entries would start the logits at a scale of sqrt(embed).
        nn.init.normal_(self.embedding.weight, 0.0, embed**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embedding(tokens))
        return self.out(self.fc2(F.relu(self.fc1(states))))
