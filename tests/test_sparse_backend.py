"""The sparse backend computes what masked dense matrices compute, and keeps the engine's invariants."""
import pytest
import torch

from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.layers import MaskedLinear, backend_for, crossover_density


def layer_pair(density: float, seed: int = 0) -> tuple[MaskedLinear, MaskedLinear]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(256, 400, generator=generator) < density
    dense = MaskedLinear(mask)
    dense.reset_parameters(generator)
    sparse = MaskedLinear(mask)
    sparse.load_state_dict(dense.state_dict())
    sparse.backend = "sparse"
    return dense, sparse


@pytest.mark.parametrize("density", [0.01, 0.05, 0.3])
def test_forward_and_gradients_match_masked_dense(density):
    dense, sparse = layer_pair(density)
    x = (torch.rand(32, 400, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    grad_out = torch.randn(32, 256, generator=torch.Generator().manual_seed(2))
    results = []
    for layer in (dense, sparse):
        inputs = x.clone().requires_grad_()
        out = layer(inputs)
        out.backward(grad_out)
        results.append((out.detach(), layer.weight.grad * layer.mask, layer.bias.grad, inputs.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert sparse.weight.grad[~sparse.mask].abs().max() == 0  # only existing connections get gradient


def test_dense_gradient_on_request_is_the_full_gradient():
    dense, sparse = layer_pair(0.05)
    sparse.dense_gradient = True
    x = (torch.rand(8, 400, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    for layer in (dense, sparse):
        layer(x).square().sum().backward()
    torch.testing.assert_close(sparse.weight.grad, dense.weight.grad, rtol=1e-5, atol=1e-5)
    assert sparse.weight.grad[~sparse.mask].abs().max() > 0  # what RigL grows by


def test_an_in_place_mask_change_is_seen_by_the_next_forward():
    dense, sparse = layer_pair(0.1)
    x = torch.rand(4, 400)
    sparse(x)
    new_mask = torch.rand(256, 400, generator=torch.Generator().manual_seed(9)) < 0.1
    with torch.no_grad():
        for layer in (dense, sparse):
            layer.mask.copy_(new_mask)  # what the engine does
            layer.weight.mul_(new_mask)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_auto_picks_sparse_only_below_the_layers_crossover_density():
    crossover = crossover_density(256, 400, trains=True)
    low, _ = layer_pair(crossover / 2)
    high, _ = layer_pair(min(1.0, crossover * 2))
    assert backend_for(low, "auto") == "sparse" and backend_for(high, "auto") == "dense"
    assert backend_for(high, "sparse") == "sparse" and backend_for(low, "dense") == "dense"


def test_the_crossover_falls_for_small_layers_whose_sparse_overheads_weigh_more():
    for trains in (True, False):
        crossovers = [crossover_density(units, inputs, trains) for units, inputs in ((128, 400), (1024, 1000))]
        assert 0 <= crossovers[0] < crossovers[1] < 1


def test_auto_decides_a_frozen_layer_by_its_forward_only_crossover():
    """Fixed weights make a frozen layer; the agent must freeze it before auto picks its backend."""
    learned, frozen = crossover_density(1024, 400, True), crossover_density(1024, 400, False)
    assert learned != frozen
    density = (learned + frozen) / 2
    backends = {weights: Agent(Config(structure="random", weights=weights, sparsity=1 - density,
                                      replay_capacity=100)).q.structured.backend
                for weights in ("learned", "fixed")}
    assert backends == {"learned": "sparse" if learned > frozen else "dense",
                        "fixed": "dense" if learned > frozen else "sparse"}



def test_auto_moves_a_layer_that_pruning_thins_to_the_sparse_backend_and_resumes_there():
    config = Config(structure="prune", structure_options={"start": 0.0, "end": 0.5, "period": 20}, frames=400,
                    replay_start=100, replay_capacity=500, backend="auto")
    agent = Agent(config)
    layer = agent.q.structured
    assert layer.backend == agent.target.structured.backend == "dense"  # pruning starts dense
    observation = agent.game.observation()
    for _ in range(config.frames):
        observation, _, _ = agent.step(observation)
    density = float(layer.mask.float().mean())
    assert density < crossover_density(1024, 400, trains=True)
    assert layer.backend == agent.target.structured.backend == "sparse"
    assert layer.weight in agent.optimizer.connections  # steps the present connections only
    assert torch.all(layer.weight[~layer.mask] == 0)
    resumed = Agent(config)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.q.structured.backend == resumed.target.structured.backend == "sparse"
    assert resumed.q.structured.weight in resumed.optimizer.connections


def run_agent(backend: str, updates: int, **config) -> tuple[Agent, list[float]]:
    agent = Agent(Config(replay_start=100, replay_capacity=500, target_period=25, backend=backend, **config))
    observation = agent.game.observation()
    for _ in range(200):
        reward, done = agent.game.act(int(agent.rng.integers(6)))
        agent.replay.add(observation, 0, reward, agent.game.observation(), done)
        if done:
            agent.game.reset()
        observation = agent.game.observation()
    agent.begin_learning()
    losses = []
    for _ in range(updates):
        before = agent._statistics[0].item()
        agent.update()
        losses.append(agent._statistics[0].item() - before)
    return agent, losses


@pytest.mark.parametrize("weights", ["learned", "fixed"])
def test_agent_on_sparse_backend_matches_dense_and_keeps_masked_weights_zero(weights):
    dense, dense_losses = run_agent("dense", 60, structure="random", weights=weights, sparsity=0.95)
    sparse, sparse_losses = run_agent("sparse", 60, structure="random", weights=weights, sparsity=0.95)
    assert sparse.q.structured.backend == "sparse"
    assert sparse_losses == pytest.approx(dense_losses, rel=1e-4, abs=1e-6)
    for a, b in zip(sparse.q.parameters(), dense.q.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    layer = sparse.q.structured
    assert layer.weight[~layer.mask].abs().max() == 0
    if weights == "learned":
        state = sparse.optimizer.state[layer.weight]
        assert state["square_avg"][~layer.mask].abs().max() == 0
    else:
        assert torch.equal(layer.weight, Agent(sparse.config).q.structured.weight)  # bit-identical, never moved


def test_rigl_grows_the_same_connections_on_either_backend():
    options = {"period": 10}
    dense, _ = run_agent("dense", 31, structure="rigl", structure_options=options, sparsity=0.95, frames=1000)
    sparse, _ = run_agent("sparse", 31, structure="rigl", structure_options=options, sparsity=0.95, frames=1000)
    assert dense.engine.topology_changes >= 3
    assert torch.equal(sparse.q.structured.mask, dense.q.structured.mask)


def test_the_no_state_masking_ablation_steps_every_entry_on_either_backend():
    # The ablation keeps dropped connections' optimizer state, which every dense step decays; a step
    # over present connections only would freeze it, so the sparse backend steps every entry here.
    options = {"period": 10}
    runs = {backend: run_agent(backend, 41, structure="set", structure_options=options, sparsity=0.95,
                               frames=1000, mask_optimizer_state=False)[0] for backend in ("dense", "sparse")}
    dense, sparse = runs["dense"].q.structured, runs["sparse"].q.structured
    assert sparse.backend == "sparse" and sparse.weight not in runs["sparse"].optimizer.connections
    assert runs["dense"].engine.topology_changes >= 4
    assert torch.equal(sparse.mask, dense.mask)
    for name in ("square_avg", "grad_avg"):
        torch.testing.assert_close(runs["sparse"].optimizer.state[sparse.weight][name],
                                   runs["dense"].optimizer.state[dense.weight][name], rtol=1e-4, atol=1e-9)
