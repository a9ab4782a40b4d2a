"""Compiled loops (numba) of the fast TD update and of acting.

Between the update's matrix products (torch, MKL) sit many small steps: activations, the
target's max, the head, the Huber loss and their gradients. As torch operations each costs
5-10 us of dispatch; here they are a few loops. The head's loss needs Q(s, a) of the taken
action only, so the online head is one dot product per sample and its gradient one row.

Acting evaluates one frame: a MinAtar frame has a few dozen active cells out of several
hundred, so its structured layer adds up the weights of the active inputs instead of
multiplying. Inputs are read as values (not assumed 0/1), so that is exact for any frame.

Layouts: layer activations are feature-major (units, samples).
"""
from __future__ import annotations

import numba
import numpy as np

Array = np.ndarray


@numba.njit(cache=True, nogil=True)
def activate(x: float, slope: float) -> float:  # pragma: no cover - compiled
    return x if x > 0 else slope * x


@numba.njit(cache=True, nogil=True)
def activation_backward(grad: Array, pre: Array, slope: float) -> None:  # pragma: no cover - compiled
    """Turn d loss / d activations into d loss / d pre-activations in place (same layout as `pre`)."""
    grad, pre = grad.reshape(-1), pre.reshape(-1)
    for i in range(grad.size):
        if not pre[i] > 0:
            grad[i] *= np.float32(slope)


@numba.njit(cache=True, nogil=True)
def target_values(hidden_pre: Array, hidden_bias: Array, head_weight: Array, head_bias: Array, slope: float,
                  next_q: Array) -> None:  # pragma: no cover
    """max_a Q_target(s', a) per sample from the target's hidden pre-activations without bias (units, samples)."""
    hidden = np.empty(hidden_pre.shape[0], np.float32)
    for b in range(hidden_pre.shape[1]):
        for h in range(hidden.size):
            hidden[h] = activate(hidden_pre[h, b] + hidden_bias[h], slope)
        values = head_weight @ hidden + head_bias
        next_q[b] = values.max()


@numba.njit(cache=True, nogil=True)
def head_step(hidden_pre: Array, hidden_bias: Array, head_weight: Array, head_bias: Array, slope: float,
              actions: Array, rewards: Array, dones: Array, next_q: Array, gamma: float, grad_hidden_pre: Array,
              grad_hidden_bias: Array, grad_head_weight: Array, grad_head_bias: Array,
              statistics: Array) -> None:  # pragma: no cover
    """Huber TD loss of Q(s, a) = head(act(hidden_pre + bias)) against r + gamma (1 - done) next_q.

    Writes the loss's mean and mean Q(s, a) into `statistics`, the head's gradients, and the
    gradient of the hidden layer's pre-activation (units, samples) and bias.
    """
    size = actions.size
    grad_head_weight[:] = 0
    grad_head_bias[:] = 0
    grad_hidden_bias[:] = 0
    hidden = np.empty(hidden_pre.shape[0], np.float32)
    loss = taken = 0.0
    for b in range(size):
        a = actions[b]
        q = head_bias[a]
        for h in range(hidden.size):
            hidden[h] = activate(hidden_pre[h, b] + hidden_bias[h], slope)
            q += head_weight[a, h] * hidden[h]
        error = q - (rewards[b] + np.float32(gamma) * (np.float32(1.0) - dones[b]) * next_q[b])
        loss += 0.5 * error * error if abs(error) < 1.0 else abs(error) - 0.5
        taken += q
        grad = min(max(error, np.float32(-1.0)), np.float32(1.0)) / np.float32(size)
        grad_head_bias[a] += grad
        for h in range(hidden.size):
            grad_head_weight[a, h] += grad * hidden[h]
            slope_here = np.float32(1.0) if hidden_pre[h, b] + hidden_bias[h] > 0 else np.float32(slope)
            grad_hidden_pre[h, b] = grad * head_weight[a, h] * slope_here
            grad_hidden_bias[h] += grad_hidden_pre[h, b]
    statistics[0] = loss / size
    statistics[1] = taken / size


@numba.njit(cache=True, nogil=True)
def conv_features(observation: Array, weight: Array, bias: Array, slope: float) -> Array:  # pragma: no cover - compiled
    """Activated 3x3 valid-conv features (filter-major) of one (C, H, W) frame: each active input
    adds its kernel entries to the outputs whose window holds it."""
    filters, channels, kernel = weight.shape[0], weight.shape[1], weight.shape[2]
    out = observation.shape[1] - kernel + 1
    sums = np.empty((filters, out, out), np.float32)
    for f in range(filters):
        sums[f] = bias[f]
    for c in range(channels):
        for row in range(observation.shape[1]):
            for column in range(observation.shape[2]):
                value = np.float32(observation[c, row, column])
                if value != 0:
                    for dy in range(max(0, row - out + 1), min(kernel, row + 1)):
                        for dx in range(max(0, column - out + 1), min(kernel, column + 1)):
                            for f in range(filters):
                                sums[f, row - dy, column - dx] += weight[f, c, dy, dx] * value
    features = sums.reshape(-1)
    for i in range(features.size):
        features[i] = activate(features[i], slope)
    return features


@numba.njit(cache=True, nogil=True)
def masked_features(frame: Array, weight: Array, bias: Array, slope: float) -> Array:  # pragma: no cover - compiled
    """Activated features of a masked layer (absent weights are zero) for one flat frame (1, C*H*W)."""
    features = bias.copy()
    for i in range(frame.shape[1]):
        value = np.float32(frame[0, i])
        if value != 0:
            features += weight[:, i] * value
    for i in range(features.size):
        features[i] = activate(features[i], slope)
    return features


@numba.njit(cache=True, nogil=True)
def greedy_action(features: Array, hidden_weight: Array, hidden_bias: Array, head_weight: Array,
                  head_bias: Array, slope: float) -> int:  # pragma: no cover
    hidden = hidden_weight @ features + hidden_bias
    for i in range(hidden.size):
        hidden[i] = activate(hidden[i], slope)
    return np.argmax(head_weight @ hidden + head_bias)


@numba.njit(cache=True, nogil=True)
def soft_threshold(values: Array, threshold: float) -> None:  # pragma: no cover - compiled
    """values = softshrink(values, threshold) in place, in float32 as torch computes it (within the threshold
    v * 0, which keeps NaN; torch's zeros there may have the other sign)."""
    t = np.float32(threshold)
    for i in range(values.size):
        v = values[i]
        values[i] = v - t if v > t else (v + t if v < -t else v * np.float32(0.0))


@numba.njit(cache=True, nogil=True)
def scatter(destination: Array, index: Array, values: Array) -> None:  # pragma: no cover - compiled
    """destination[index[k]] = values[k]."""
    for k in range(index.size):
        destination[index[k]] = values[k]


# An input that is on in fewer samples of the batch than this is worked through those samples
# alone, a loop over its connections per sample; one on in more is worked as a vector loop over the
# whole batch per connection (measured on breakout's and space_invaders' replay batches: bricks and
# walls are on in most frames, the ball and the aliens' shots in one or two; 4 was 13% faster than 8).
GATHER_BELOW = 4


@numba.njit(cache=True, nogil=True)
def _samples_on(column: Array, on: Array) -> int:  # pragma: no cover - compiled
    """Write the samples where `column` is nonzero into `on`, in order; return how many there are."""
    count = 0
    for b in range(column.size):
        if column[b] != 0:
            on[count] = b
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def active_columns(x: Array) -> tuple[Array, Array, Array]:  # pragma: no cover - compiled
    """The inputs a batch x (samples, inputs) has on somewhere, found once for the forward product and the
    weight gradient: each input's row in the returned (active, samples) matrix of their values, or -1 for
    an input that is off in every sample (four in five of breakout's); and the active inputs, ascending.
    x is scanned in its own row order and only the active inputs are gathered: transposing the whole batch
    first took three times as long."""
    samples, inputs = x.shape
    position = np.full(inputs, -1, np.int64)
    for b in range(samples):
        for i in range(inputs):
            if x[b, i] != 0:
                position[i] = 0
    count = 0
    for i in range(inputs):
        if position[i] == 0:
            position[i] = count
            count += 1
    on = np.empty(count, np.int64)
    for i in range(inputs):
        if position[i] >= 0:
            on[position[i]] = i
    active = np.empty((count, samples), np.float32)
    for b in range(samples):
        for j in range(count):
            active[j, b] = x[b, on[j]]
    return position, on, active


@numba.njit(cache=True, nogil=True)
def input_sparse_product(position: Array, active: Array, column_starts: Array, rows: Array, weights: Array,
                         bias: Array, out: Array) -> None:  # pragma: no cover - compiled
    """out (units, samples) = W x^T + b for a batch given by its active inputs (`active_columns`), W's present
    connections given input-major (CSC: column_starts, rows, weights). MinAtar frames are binary and mostly
    empty, so an input that is off in the whole batch adds nothing and is skipped; one that is on adds its
    connections' weights times its values to the samples where it is on (GATHER_BELOW). Each output is
    its bias plus its inputs' terms in input order."""
    samples = active.shape[1]
    on = np.empty(samples, np.int64)
    for u in range(out.shape[0]):
        out[u, :] = bias[u]
    for i in range(position.size):
        if position[i] < 0:
            continue
        column = active[position[i]]
        count = _samples_on(column, on)
        if count < GATHER_BELOW:
            for k in range(count):
                b = on[k]
                value = column[b]
                for c in range(column_starts[i], column_starts[i + 1]):
                    out[rows[c], b] += weights[c] * value
        else:
            for c in range(column_starts[i], column_starts[i + 1]):
                weight, row = weights[c], out[rows[c]]
                for b in range(samples):
                    row[b] += weight * column[b]


@numba.njit(cache=True, nogil=True)
def _clear_off_input(grad: Array, start: int, end: int, previous: Array | None,
                     i: int) -> None:  # pragma: no cover - compiled
    """Zero the gradient of input i's connections [start, end), off in the whole batch, unless the last write
    into `grad` (`previous`: its positions, None: none) had the input off too and so left them zero."""
    if previous is None or previous[i] >= 0:
        grad[start:end] = 0


@numba.njit(cache=True, nogil=True)
def gather_present(products: Array, position: Array, previous: Array | None, column_starts: Array, rows: Array,
                   grad: Array) -> None:  # pragma: no cover - compiled
    """dL/dW at the present connections (input-major, as in `input_sparse_product`) from the products of the
    active inputs with dL/d out (active, units; see `active_columns`): zero where the input is off. That
    layout reads each input's products contiguously, in the order its connections' rows ascend; an input
    connected to every unit takes its products as they are. `previous`: the positions of the last write into
    `grad` (None: none), whose inputs that were off then are still zero and are left alone."""
    units = products.shape[1]
    for i in range(position.size):
        start, end, j = column_starts[i], column_starts[i + 1], position[i]
        if j < 0:
            _clear_off_input(grad, start, end, previous, i)
        elif end - start == units:
            grad[start:end] = products[j]
        else:
            products_of_input = products[j]
            for c in range(start, end):
                grad[c] = products_of_input[rows[c]]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def present_dots(grad_out: Array, position: Array, active: Array, previous: Array | None, column_starts: Array,
                 rows: Array, grad: Array) -> None:  # pragma: no cover - compiled
    """dL/dW at the present connections (input-major, as in `input_sparse_product`) as one dot product per
    connection of its input's values with its unit's dL/d out (units, samples) across the batch, for batches
    whose active inputs have few connections each (`gather_present` is the alternative). The sums may be
    reassociated, so that they vectorize: they can differ from a matrix product's in the last bits, and a
    machine always adds them the same way. `previous` as in `gather_present`."""
    samples = active.shape[1]
    for i in range(position.size):
        start, end, j = column_starts[i], column_starts[i + 1], position[i]
        if j < 0:
            _clear_off_input(grad, start, end, previous, i)
            continue
        values = active[j]
        for c in range(start, end):
            unit = grad_out[rows[c]]
            total = np.float32(0.0)
            for b in range(samples):
                total += values[b] * unit[b]
            grad[c] = total


@numba.njit(cache=True, nogil=True)
def sparse_features(frame: Array, column_starts: Array, rows: Array, weights: Array, bias: Array,
                    slope: float) -> Array:  # pragma: no cover - compiled
    """Activated features of a masked layer for one flat frame, its present connections given input-major (an
    input connected to every unit adds its weights as a vector)."""
    features = bias.copy()
    for i in range(frame.size):
        x = np.float32(frame[i])
        if x == 0:
            continue
        start, end = column_starts[i], column_starts[i + 1]
        if end - start == features.size:
            features += weights[start:end] * x
        else:
            for c in range(start, end):
                features[rows[c]] += weights[c] * x
    for u in range(features.size):
        features[u] = activate(features[u], slope)
    return features
