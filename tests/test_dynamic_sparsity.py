"""Drop/regrow bookkeeping, schedules, predictive selection and the L1 budget."""
import numpy as np
import pytest
import torch

from minisparse import dqn
from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.masks import cubic_schedule
from minisparse.network import build_network, layer_specs
from minisparse.optim import make_optimizer
from minisparse.sparsity import SparsityEngine
from minisparse.structure import LayerSpec, Signals, make_structure
from minisparse.structures.predictive import predictor_coefficients


def engine_for(structure, weights="learned", optimizer="adam", mask_optimizer_state=True, **options):
    config = Config(structure=structure, weights=weights, optimizer=optimizer, frames=5_000 + 2_000,
                    replay_start=5_000, mask_optimizer_state=mask_optimizer_state,
                    structure_options=options).validate()
    s = make_structure(structure, config.structure_options)
    net = build_network(config, s, torch.Generator().manual_seed(0))
    engine = SparsityEngine(net, s, layer_specs(config), seed=0, mask_optimizer_state=mask_optimizer_state)
    opt = make_optimizer(config, engine.trainable_parameters())
    engine.attach(opt)
    return net, engine, opt


def step(net, engine, opt, generator):
    x = (torch.rand(32, 4, 10, 10, generator=generator) < 0.2).float()
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    engine.before_step()
    opt.step()
    engine.after_step()


def run_until_topology_change(net, engine, opt, period):
    generator = torch.Generator().manual_seed(1)
    for _ in range(period - 1):
        step(net, engine, opt, generator)
    layer = net.structured
    before = {"mask": layer.mask.clone(), "weight": layer.weight.detach().clone(),
              "state": {k: v.clone() for k, v in opt.state.get(layer.weight, {}).items() if torch.is_tensor(v)}}
    step(net, engine, opt, generator)  # the update step: the engine applies the new mask
    return before


@pytest.mark.parametrize("structure", ["set", "rigl"])
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_drop_and_regrow_in_learned_mode(structure, optimizer):
    net, engine, opt = engine_for(structure, optimizer=optimizer, period=5)
    before = run_until_topology_change(net, engine, opt, period=6)
    layer = net.structured
    grown = layer.mask & ~before["mask"]
    dropped = before["mask"] & ~layer.mask
    assert grown.sum() == dropped.sum() > 0
    assert layer.mask.sum() == before["mask"].sum() == 1024 * 36  # density constant
    assert layer.weight[grown].abs().max() == 0  # regrown connections start at zero
    assert layer.weight[dropped].abs().max() == 0
    names = {"adam": ("exp_avg", "exp_avg_sq"), "rmsprop": ("square_avg", "grad_avg")}[optimizer]
    state = opt.state[layer.weight]
    for name in names:
        assert state[name][grown | dropped].abs().max() == 0, name
        assert state[name][layer.mask & before["mask"]].abs().max() > 0, name  # the rest is kept


def test_optimizer_state_masking_can_be_turned_off_for_ablations():
    net, engine, opt = engine_for("set", mask_optimizer_state=False, period=5)
    run_until_topology_change(net, engine, opt, period=6)
    layer = net.structured
    dropped_state = opt.state[layer.weight]["exp_avg_sq"][~layer.mask]
    assert dropped_state.abs().max() > 0  # stale moments kept for dropped connections
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):  # which would move them again on every step, but for the engine's re-masking
        step(net, engine, opt, generator)
        assert layer.weight[~layer.mask].abs().max() == 0


def test_regrown_connection_takes_its_frozen_initial_value_in_fixed_mode():
    net, engine, opt = engine_for("rigl", weights="fixed", period=5)
    layer = net.structured
    initial = layer.weight.detach().clone()
    before = run_until_topology_change(net, engine, opt, period=6)
    grown = layer.mask & ~before["mask"]
    assert grown.sum() > 0
    assert torch.equal(layer.weight, initial)
    effective = layer.effective_weight().detach()
    assert torch.equal(effective[grown], initial[grown])
    assert effective[~layer.mask].abs().max() == 0
    assert layer.weight not in opt.state


def test_rigl_grows_where_the_gradient_is_largest_and_set_at_random():
    spec = LayerSpec("structured", 10, 2, fan_in=3, channels=0, fixed=False, total_updates=1000,
                     frames_before_learning=0)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :3] = True
    importance = torch.arange(20, dtype=torch.float).view(2, 10)  # weakest present: (0, 0)
    growth = torch.zeros(2, 10)
    growth[1, 9] = 5.0
    rigl = make_structure("rigl", {"drop_fraction": 1 / 6, "anneal": "constant"})
    new = rigl.update_mask(mask, Signals(importance, growth), 100, spec, torch.Generator().manual_seed(0))
    assert not new[0, 0] and new[1, 9] and new.sum() == 6
    set_ = make_structure("set", {"drop_fraction": 1 / 6, "anneal": "constant"})
    grown = [tuple((set_.update_mask(mask, Signals(importance, growth), 100, spec,
                                     torch.Generator().manual_seed(seed)) & ~mask).nonzero()[0].tolist())
             for seed in range(8)]
    assert len(set(grown)) > 1  # random regrowth


def test_drop_fraction_is_cosine_annealed_to_zero_at_the_end():
    s = make_structure("set", {})
    spec = LayerSpec("structured", 400, 1024, fan_in=36, channels=4, fixed=False, total_updates=10_000,
                     frames_before_learning=0)
    assert s.is_update_step(100, spec) and not s.is_update_step(150, spec)
    assert not s.is_update_step(7600, spec)  # updates end at 75% of training
    rigl = make_structure("rigl", {})
    mask = make_structure("random", {}).initial_mask(spec, torch.Generator().manual_seed(0))
    growth = torch.rand(1024, 400).masked_fill(mask, -1.0)  # so no dropped connection is regrown
    signals = Signals(torch.rand(1024, 400), growth)
    moved = [int((rigl.update_mask(mask, signals, t, spec, torch.Generator()) ^ mask).sum()) // 2
             for t in (100, 3750, 7400)]
    assert moved[0] == round(0.3 * 0.5 * (1 + np.cos(np.pi * 100 / 7500)) * 36864)
    assert moved[0] > moved[1] > moved[2]


def test_gradual_pruning_follows_the_cubic_schedule():
    prune = make_structure("prune", {"start": 0.2, "end": 0.8, "period": 100})
    spec = LayerSpec("structured", 400, 1024, fan_in=36, channels=4, fixed=False, total_updates=1000,
                     frames_before_learning=0)
    steps = [t for t in range(1001) if prune.is_update_step(t, spec)]
    assert steps == [200, 300, 400, 500, 600, 700, 800]
    mask = torch.ones(1024, 400, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    counts = []
    for t in steps:
        importance = torch.rand(1024, 400, generator=generator)
        new = prune.update_mask(mask, Signals(importance, importance), t, spec, generator)
        assert not (new & ~mask).any()  # pruning never grows
        if (mask & ~new).any():
            assert importance[new].min() >= importance[mask & ~new].max()  # smallest magnitudes go first
        mask = new
        counts.append(int(mask.sum()))
    expected = [cubic_schedule(409600, 36864, (t - 200) / 600) for t in steps]
    assert counts == expected and counts[-1] == 36864


@pytest.mark.parametrize("structure", ["prune", "l1"])
def test_pruning_chooses_at_random_among_equal_magnitudes(structure):
    """An L1 penalty leaves most magnitudes exactly zero, so the last pruning step chooses most of the
    budget among ties: by position (torch's topk) that wired 95 of 1024 units in full and left the rest
    with no input (the pilot's first l1 runs); at random every unit keeps inputs."""
    pruning = make_structure(structure, {"start": 0.2, "end": 0.8, "period": 100})
    spec = LayerSpec("structured", 400, 1024, fan_in=36, channels=4, fixed=False, total_updates=1000,
                     frames_before_learning=0)
    generator = torch.Generator().manual_seed(0)
    importance = torch.zeros(1024, 400)
    survivors = torch.rand(1024, 400, generator=generator) < 0.01  # the few weights the penalty left
    importance[survivors] = torch.rand(int(survivors.sum()), generator=generator)
    mask = torch.ones(1024, 400, dtype=torch.bool)
    new = pruning.update_mask(mask, Signals(importance, importance), 800, spec, generator)
    assert int(new.sum()) == spec.connections
    assert new[survivors].all()  # every nonzero magnitude outranks the ties
    fan_in = new.sum(1)
    assert (fan_in > 0).all() and fan_in.max() < 80  # about 36 inputs per unit, not 400 for a few
    again = pruning.update_mask(mask, Signals(importance, importance), 800, spec, torch.Generator().manual_seed(0))
    assert not torch.equal(new, again)  # the choice among ties is the generator's


def test_predictive_reads_the_inputs_that_predict_its_target():
    """Inputs come in blocks of 4 that are noisy copies of one hidden source: a target's best
    linear predictors are the other members of its block."""
    rng = np.random.default_rng(0)
    sources = rng.random((4000, 100)) < 0.5
    noise = rng.random((4000, 400)) < 0.05
    x = (np.repeat(sources, 4, axis=1) ^ noise).astype(np.uint8)  # input i copies source i // 4
    coefficients = predictor_coefficients(x, ridge=1e-2)
    best = np.argsort(-np.abs(coefficients), axis=1)[:, :3]
    assert (best // 4 == np.arange(400)[:, None] // 4).all()
    predictive = make_structure("predictive", {"group_size": 16})
    spec = LayerSpec("structured", 400, 1024, fan_in=4, channels=4, fixed=False, total_updates=0,
                     frames_before_learning=500)
    mask = predictive.begin_learning(spec, x.reshape(-1, 4, 10, 10), torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 4).all()
    for group in range(64):
        rows = mask[group * 16:(group + 1) * 16]
        assert (rows == rows[0]).all()  # a group shares its receptive field
        blocks = rows[0].nonzero().squeeze(1) // 4
        assert (blocks == blocks[0]).all()  # ... which is the target's block


def test_l1_shrinks_weights_and_its_mask_reaches_the_budget(tmp_path):
    short = dict(frames=900, replay_start=200, replay_capacity=1000, batch_size=16, target_period=100,
                 epsilon_frames=300, log_every=300, checkpoint_every=300)
    l1 = dqn.start(Config(structure="l1", structure_options={"strength": 0.1}, **short), tmp_path / "l1")
    prune = dqn.start(Config(structure="prune", **short), tmp_path / "prune")
    end = np.load(l1 / "masks" / "end.npz")["structured"]
    assert end.sum() == 1024 * 36
    l1_weights = torch.load(l1 / "model.pt", weights_only=True)["structured.weight"]
    prune_weights = torch.load(prune / "model.pt", weights_only=True)["structured.weight"]
    assert torch.isfinite(l1_weights).all()
    assert l1_weights.abs().sum() < 0.9 * prune_weights.abs().sum()


def test_supermask_scores_off_the_mask_keep_learning_in_learned_mode():
    net, engine, opt = engine_for("supermask", optimizer="adam", period=1000)
    layer = net.structured
    initial = layer.score.detach().clone()
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        step(net, engine, opt, generator)
    absent = ~layer.mask
    assert (layer.score.grad[absent] != 0).float().mean() > 0.5  # their weights, hidden, carry a gradient
    assert (layer.score[absent] != initial[absent]).float().mean() > 0.5
    assert layer.effective_weight()[absent].abs().max() == 0


def test_a_scored_layers_product_follows_its_trained_weight():
    """Supermask with learned weights: the compiled optimizer steps the weight in place, which its
    version counter does not see, so a gated weight kept by that key went stale between mask changes."""
    agent = Agent(Config(structure="supermask", weights="learned", replay_start=100,
                         structure_options={"period": 50}).validate())
    observation = agent.game.observation()
    for _ in range(230):
        observation = agent.step(observation)[0]
    layer = agent.q.structured
    assert agent.counters.updates == 130 and not torch.equal(layer.weight, agent.target.structured.weight)
    torch.testing.assert_close(layer.gated_weight(), layer.weight.detach() * layer.mask, rtol=0, atol=0)


def test_the_gate_hands_scores_edge_popups_straight_through_gradient_and_follows_mask_changes():
    """A scored layer's product uses weight * mask (kept between changes) and gives the scores and the
    weight the gradients of weight * (mask + score - score.detach()), written out here with autograd."""
    from minisparse.layers import MaskedLinear
    mask = torch.rand(64, 100, generator=torch.Generator().manual_seed(0)) < 0.3
    layer = MaskedLinear(mask, scored=True)
    layer.reset_parameters(torch.Generator().manual_seed(1))
    x = torch.randn(8, 100, generator=torch.Generator().manual_seed(2))
    grad_out = torch.randn(8, 64, generator=torch.Generator().manual_seed(3))
    for step in range(2):
        layer.score.grad = layer.weight.grad = None
        out = layer(x)
        out.backward(grad_out)
        score = layer.score.detach().clone().requires_grad_()
        weight = layer.weight.detach().clone().requires_grad_()
        expected = torch.nn.functional.linear(x, weight * (layer.mask.float() + (score - score.detach())), layer.bias)
        expected.backward(grad_out)
        assert torch.equal(out, expected)
        assert torch.equal(layer.score.grad, score.grad) and torch.equal(layer.weight.grad, weight.grad)
        with torch.no_grad():
            layer.mask.copy_(torch.roll(layer.mask, 1, dims=1))  # a connectivity update: the next step sees it


def test_l1_proximal_step_is_softshrink_bit_for_bit_and_remakes_cached_values():
    """The compiled in-place soft threshold gives torch's softshrink's values exactly (at, around and beyond
    the threshold, zeros, NaN and infinities; a zero's sign may differ), and advances the version counter
    that cached values (a sparse-backend layer's present weights) are keyed by."""
    from minisparse.sparsity import _soft_threshold
    threshold = 0.0625
    values = torch.cat((torch.randn(5000) * 0.1, torch.tensor(
        [threshold, -threshold, threshold * (1 + 2 ** -23), 0.0, -0.0, float("nan"), float("inf"), -float("inf")])))
    expected = torch.nn.functional.softshrink(values, threshold)
    version = values._version
    _soft_threshold(values, threshold)
    assert values._version > version
    torch.testing.assert_close(values, expected, rtol=0, atol=0, equal_nan=True)
