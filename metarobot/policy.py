"""Gaussian MLP policy: a torch module whose weights the C++ engine evaluates inside its loop.

mean = MLP(obs), action = mean + exp(log_std) * N(0, I), log_std state-independent and learned.
The same parameters run in torch (for gradients, through torch.func.functional_call) and in C++
(for sampling), so adapted parameters can be rolled out without rebuilding a module.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

_ACTIVATIONS = {"tanh": (nn.Tanh, 0), "relu": (nn.ReLU, 1)}


class GaussianMLPPolicy(nn.Module):
    """obs (..., obs_dim) float32 -> Normal over actions (..., act_dim).

    Args:
      obs_dim, act_dim: sizes of observations and actions.
      hidden_sizes: widths of the hidden layers (the MAML paper: 100, 100).
      activation: 'relu' or 'tanh'.
      init_log_std: initial log standard deviation of every action dimension.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (100, 100),
                 activation: str = "relu", init_log_std: float = 0.0):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation should be one of {sorted(_ACTIVATIONS)}, got "
                             f"{activation!r}")
        sizes = [int(obs_dim), *map(int, hidden_sizes), int(act_dim)]
        if any(s < 1 for s in sizes):
            raise ValueError(f"layer sizes should be >= 1, got {sizes}")
        self.sizes = tuple(sizes)
        self.activation = activation
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        self.layers = nn.ModuleList(layers)
        self.log_std = nn.Parameter(torch.full((sizes[-1],), float(init_log_std)))

    @property
    def obs_dim(self) -> int:
        return self.sizes[0]

    @property
    def act_dim(self) -> int:
        return self.sizes[-1]

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        act = _ACTIVATIONS[self.activation][0]()
        h = obs
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = act(h)
        return h

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(obs)
        return torch.distributions.Normal(mean, torch.exp(self.log_std).expand_as(mean))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of actions (..., act_dim) summed over action dimensions: (...)."""
        return self(obs).log_prob(actions).sum(-1)

    def export(self, params: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, object]:
        """The weights as the C++ engine takes them (float32, input-major), from this module's
        parameters or from a dict of the same names (adapted parameters)."""
        source = dict(self.named_parameters()) if params is None else params
        missing = [n for n, _ in self.named_parameters() if n not in source]
        if missing:
            raise ValueError(f"params lacks {missing}")
        weights, biases = [], []
        for i in range(len(self.layers)):
            w = source[f"layers.{i}.weight"].detach().to("cpu", torch.float32)
            b = source[f"layers.{i}.bias"].detach().to("cpu", torch.float32)
            weights.append(np.ascontiguousarray(w.numpy().T))
            biases.append(np.ascontiguousarray(b.numpy()))
        log_std = np.ascontiguousarray(
            source["log_std"].detach().to("cpu", torch.float32).numpy())
        for name, arr in [("log_std", log_std)] + [(f"layers.{i}", w) for i, w in
                                                    enumerate(weights)]:
            if not np.isfinite(arr).all():
                raise ValueError(f"policy parameter {name} holds NaN or infinity")
        return dict(sizes=list(self.sizes), weights=weights, biases=biases, log_std=log_std,
                    activation=_ACTIVATIONS[self.activation][1])
