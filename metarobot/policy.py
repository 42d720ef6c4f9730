"""Gaussian MLP policy: a torch module whose weights the C++ engine evaluates inside its loop.

mean = MLP(obs), action = mean + exp(log_std) * N(0, I), log_std state-independent and learned.
The same parameters run in torch (for gradients, through torch.func.functional_call) and in C++
(for sampling), so adapted parameters can be rolled out without rebuilding a module.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def relu(h: torch.Tensor) -> torch.Tensor:
    """max(h, 0) written as h * [h > 0]: for finite h the same values (up to the sign of zeros)
    and the same derivatives at every order as torch.relu (0 at h = 0), but its derivatives
    are products with a mask. Those of torch.relu are threshold_backward, which PyTorch's CPU kernel runs
    several times slower on the transposed gradients that reverse-over-reverse products give:
    MAML's outer step is 1.13-1.23x faster this way (BENCHMARKS.md, "ReLU's derivatives in
    the outer step")."""
    return h * (h > 0).to(h.dtype)


# name -> (function, the C++ engine's code for it)
_ACTIVATIONS = {"tanh": (torch.tanh, 0), "relu": (relu, 1)}
ACTIVATIONS = tuple(sorted(_ACTIVATIONS))
_LOG_2PI = math.log(2.0 * math.pi)


def mlp_mean(params: Mapping[str, torch.Tensor], obs: torch.Tensor, nlayers: int,
             activation: str) -> torch.Tensor:
    """Mean action (..., act_dim) of a Gaussian MLP with parameters layers.{i}.weight/bias, as a
    pure function (for torch.func transforms)."""
    act = _ACTIVATIONS[activation][0]
    h = obs
    for i in range(nlayers):
        h = torch.nn.functional.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        if i + 1 < nlayers:
            h = act(h)
    return h


def mlp_mean_jvp(params: Mapping[str, torch.Tensor], tangents: Mapping[str, torch.Tensor],
                 obs: torch.Tensor, nlayers: int, activation: str
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mlp_mean, its derivative along tangents): the mean action (..., act_dim) and the
    change of it when the parameters move by tangents (the same keys), written out layer by
    layer. Forward-mode differentiation by hand: torch's forward-mode levels are global to
    the process, so torch.func.jvp cannot run on several threads at once; this can."""
    relu_act = activation == "relu"
    act = _ACTIVATIONS[activation][0]
    h, dh = obs, None
    for i in range(nlayers):
        w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
        z = torch.nn.functional.linear(h, w, b)
        dz = torch.nn.functional.linear(h, tangents[f"layers.{i}.weight"],
                                        tangents[f"layers.{i}.bias"])
        if dh is not None:
            dz = dz + torch.nn.functional.linear(dh, w)
        if i + 1 < nlayers:
            h = act(z)
            dh = dz * (z > 0).to(dz.dtype) if relu_act else dz * (1.0 - h * h)
        else:
            h, dh = z, dz
    return h, dh


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor,
                      actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std)^2), summed over the last dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)


def gaussian_kl(mean0: torch.Tensor, log_std0: torch.Tensor, mean1: torch.Tensor,
                log_std1: torch.Tensor) -> torch.Tensor:
    """KL(N0 || N1) of diagonal Gaussians, summed over the last dimension."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


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
        if not (isinstance(init_log_std, (int, float)) and math.isfinite(init_log_std)):
            raise ValueError(f"init_log_std should be a finite number, got {init_log_std!r}")
        self.sizes = tuple(sizes)
        self.activation = activation
        layers = []
        for i in range(len(sizes) - 1):
            layer = nn.Linear(sizes[i], sizes[i + 1])
            # as the MAML paper's code (rllab): Glorot-uniform weights, zero biases
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.log_std = nn.Parameter(torch.full((sizes[-1],), float(init_log_std)))

    @property
    def obs_dim(self) -> int:
        return self.sizes[0]

    @property
    def act_dim(self) -> int:
        return self.sizes[-1]

    @property
    def nlayers(self) -> int:
        return len(self.layers)

    def params(self) -> Dict[str, torch.Tensor]:
        """The parameters as a dict of tensors, the form the meta-learners transform."""
        return dict(self.named_parameters())

    def mean(self, obs: torch.Tensor, params: Optional[Mapping[str, torch.Tensor]] = None
             ) -> torch.Tensor:
        return mlp_mean(self.params() if params is None else params, obs, self.nlayers,
                        self.activation)

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(obs)
        return torch.distributions.Normal(mean, torch.exp(self.log_std).expand_as(mean))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor,
                 params: Optional[Mapping[str, torch.Tensor]] = None) -> torch.Tensor:
        """Log-density of actions (..., act_dim) summed over action dimensions: (...)."""
        p = self.params() if params is None else params
        return gaussian_log_prob(self.mean(obs, p), p["log_std"], actions)

    def config(self) -> Dict[str, object]:
        """What rebuilds an identical module (for checkpoints)."""
        return dict(obs_dim=self.obs_dim, act_dim=self.act_dim,
                    hidden_sizes=list(self.sizes[1:-1]), activation=self.activation)

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
