"""Predictive connections (Martin & Modayil 2021): each group of units reads a randomly chosen
target input and the inputs that best predict it linearly, fitted on the random-policy frames
gathered before learning starts."""
import numpy as np
import torch

from minisparse.masks import random_mask, top_k_per_row
from minisparse.structure import LayerSpec, Structure, register


@register("predictive")
class Predictive(Structure):
    """Units come in groups of `group_size`. For a group's target input j, the ridge-regularised
    least-squares predictor of x_j from all other inputs of the same frame has coefficients
    -P[j, k] / P[j, j], with P the inverse of the (ridge-shrunk) input covariance; the group reads
    j and the fan_in - 1 inputs with the largest |coefficient|. Until learning starts the layer
    is wired at random at the same budget."""

    image_only = True
    group_size: int = 16
    ridge: float = 1e-2

    def __post_init__(self):
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        if spec.frames_before_learning < 2:
            raise ValueError("fits its connections to the frames before learning, so it needs "
                             f"--replay-start of at least 2, got {spec.frames_before_learning}")
        return random_mask((spec.out_features, spec.in_features), spec.fan_in, generator, per_row=True)

    def begin_learning(self, spec: LayerSpec, observations: np.ndarray,
                       generator: torch.Generator) -> torch.Tensor:
        coefficients = predictor_coefficients(observations.reshape(len(observations), -1), self.ridge)
        varying = np.flatnonzero(observations.reshape(len(observations), -1).std(0) > 0)
        if len(varying) == 0:
            raise ValueError("predictive: every input is constant in the frames gathered before learning")
        groups = -(-spec.out_features // self.group_size)
        targets = varying[torch.randint(len(varying), (groups,), generator=generator).numpy()]
        scores = torch.from_numpy(np.abs(coefficients[targets])).float()
        scores[torch.arange(groups), torch.from_numpy(targets)] = float("inf")  # the target itself
        scores += torch.rand(scores.shape, generator=generator) * 1e-9  # ties broken at random
        chosen = top_k_per_row(scores, spec.fan_in)
        return chosen.repeat_interleave(self.group_size, dim=0)[:spec.out_features]


def predictor_coefficients(x: np.ndarray, ridge: float) -> np.ndarray:
    """Row j: coefficients of the best linear prediction of input j from the others (diagonal 0)."""
    covariance = np.cov(x.astype(np.float64), rowvar=False) + ridge * np.eye(x.shape[1])
    precision = np.linalg.inv(covariance)
    coefficients = -precision / np.diag(precision)[:, None]
    np.fill_diagonal(coefficients, 0.0)
    return coefficients
