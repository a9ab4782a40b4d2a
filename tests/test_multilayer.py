"""--sparse-hidden: the budget split across layers, masks and logs for both layers."""
import numpy as np
import pandas as pd
import pytest

from conftest import TINY, minisparse, only_run
from minisparse.config import Config
from minisparse.network import layer_densities, layer_specs


def test_erk_keeps_the_total_and_gives_the_smaller_layer_more_density():
    shapes = {"structured": (1024, 400), "hidden": (128, 1024)}
    densities = layer_densities(shapes, 0.09, "erk")
    total = sum(densities[n] * u * i for n, (u, i) in shapes.items())
    assert total == pytest.approx(0.09 * (1024 * 400 + 128 * 1024))
    ratio = densities["hidden"] / densities["structured"]
    assert ratio == pytest.approx((128 + 1024) / (128 * 1024) / ((1024 + 400) / (1024 * 400)))
    assert layer_densities(shapes, 0.09, "uniform") == {"structured": 0.09, "hidden": 0.09}


def test_erk_makes_overfull_layers_dense_and_redistributes():
    shapes = {"tiny": (4, 4), "big": (1000, 1000)}
    densities = layer_densities(shapes, 0.5, "erk")
    assert densities["tiny"] == 1.0
    assert densities["big"] * 1e6 + 16 == pytest.approx(0.5 * (1e6 + 16))


def test_sparse_hidden_layer_is_wired_trained_and_logged(tmp_path):
    specs = layer_specs(Config(sparse_hidden=True, sparsity=0.9, distribution="erk"))
    result = minisparse("run", "--structure", "set", "--sparse-hidden", "--sparsity", "0.9",
                        "--distribution", "erk", "-o", "period=200", "--out", str(tmp_path), *TINY)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    end = np.load(run / "masks" / "end.npz")
    assert end["hidden"].shape == (128, 1024)
    assert end["hidden"].sum() == specs["hidden"].connections
    assert end["structured"].sum() == specs["structured"].connections
    train = pd.read_csv(run / "train.csv")
    assert {"density_hidden", "changed_hidden"} <= set(train.columns)
    assert train["changed_hidden"].sum() > 0  # SET moved connections of the hidden layer too
    listing = minisparse("structures", "--sparse-hidden", "--sparsity", "0.9", "--distribution", "erk")
    row = next(l for l in listing.stdout.splitlines() if l.strip().startswith("random"))
    connections = specs["structured"].connections + specs["hidden"].connections
    assert f"{connections:,}" in row and "1152" in row


def test_image_structures_leave_the_hidden_layer_to_random(tmp_path):
    result = minisparse("run", "--structure", "conv", "--sparse-hidden", "--out", str(tmp_path), *TINY)
    assert result.returncode == 0, result.stderr
    end = np.load(only_run(tmp_path) / "masks" / "end.npz")
    assert end["hidden"].mean() == pytest.approx(0.09, abs=0.001)
    assert end["structured"].sum() == 1024 * 36
