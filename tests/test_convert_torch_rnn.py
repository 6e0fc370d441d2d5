"""PyTorch RNN / LSTM / GRU weights in `RecurrentStack`: outputs and final states match torch's."""
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.convert.torch_rnn import _NUM_GATES, rnn_config_from_torch, rnn_params_from_torch
from zoo.nn.cells import CELL_TYPES
from zoo.nn.recurrent import RecurrentStack

torch = pytest.importorskip("torch")

ATOL = 1e-5
CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
D, H, B, T = 5, 6, 3, 7


def make_torch(cell: str, **kwargs) -> "torch.nn.RNNBase":
    """A randomly initialised torch module; biases are random too (torch's default init)."""
    if cell.startswith("rnn"):
        return torch.nn.RNN(D, H, nonlinearity=cell[4:], **kwargs)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, H, **kwargs)


def initial_states(cell: str, count: int, seed: int):
    """Random (h0,) or (h0, c0) for torch, each (count, B, H)."""
    g = torch.Generator().manual_seed(seed)
    parts = 2 if cell == "lstm" else 1
    return tuple(torch.randn(count, B, H, generator=g) for _ in range(parts))


def run_torch(module, x, states, cell):
    with torch.no_grad():
        y, carry = module(x, states if cell == "lstm" else states[0])
    carry = carry if isinstance(carry, tuple) else (carry,)
    return y, carry


def run_zoo(module, state_dict, x_btd, states, lengths=None, cell=None):
    config = rnn_config_from_torch(module)
    stack = RecurrentStack(config["cell"], config["hidden_size"], config["num_layers"],
                           config["bidirectional"])
    params = rnn_params_from_torch(state_dict, cell=cell or config["cell"])
    carry0 = tuple(jnp.asarray(s.numpy()) for s in states)
    return stack.apply({"params": params}, jnp.asarray(x_btd), lengths, initial_carry=carry0)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    module = make_torch(cell, num_layers=num_layers, bidirectional=bidirectional,
                        batch_first=batch_first)
    dirs = 2 if bidirectional else 1
    x = torch.randn(B, T, D) if batch_first else torch.randn(T, B, D)
    states = initial_states(cell, num_layers * dirs, seed=1)
    y_torch, carry_torch = run_torch(module, x, states, cell)

    x_btd = x.numpy() if batch_first else x.numpy().swapaxes(0, 1)
    y, carry = run_zoo(module, module.state_dict(), x_btd, states)
    y_torch = y_torch.numpy() if batch_first else y_torch.numpy().swapaxes(0, 1)
    assert y.shape == (B, T, H * dirs)
    np.testing.assert_allclose(np.asarray(y), y_torch, rtol=0, atol=ATOL)
    assert len(carry) == len(carry_torch)
    for part, part_torch in zip(carry, carry_torch):
        np.testing.assert_allclose(np.asarray(part), part_torch.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_without_bias(cell):
    torch.manual_seed(2)
    module = make_torch(cell, num_layers=2, bidirectional=True, batch_first=True, bias=False)
    assert not any(k.startswith("bias") for k in module.state_dict())
    x = torch.randn(B, T, D)
    states = initial_states(cell, 4, seed=3)
    y_torch, carry_torch = run_torch(module, x, states, cell)
    y, carry = run_zoo(module, module.state_dict(), x.numpy(), states)
    np.testing.assert_allclose(np.asarray(y), y_torch.numpy(), rtol=0, atol=ATOL)
    for part, part_torch in zip(carry, carry_torch):
        np.testing.assert_allclose(np.asarray(part), part_torch.numpy(), rtol=0, atol=ATOL)


def test_packed_sequences_match_lengths():
    """pack_padded_sequence (unsorted lengths) == lengths=: valid outputs and final states."""
    torch.manual_seed(4)
    module = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True)
    lengths = [4, T, 2]  # unsorted, one full-length row
    x = torch.randn(B, T, D)
    states = initial_states("lstm", 4, seed=5)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    with torch.no_grad():
        y_packed, carry_torch = module(packed, states)
    y_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=True,
                                                        total_length=T)

    y, carry = run_zoo(module, module.state_dict(), x.numpy(), states,
                       lengths=jnp.asarray(lengths))
    y, y_torch = np.asarray(y), y_torch.numpy()
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(y[b, :n], y_torch[b, :n], rtol=0, atol=ATOL)
        np.testing.assert_array_equal(y[b, n:], 0.0)  # the zoo zeroes padding, as torch does
        np.testing.assert_array_equal(y_torch[b, n:], 0.0)
    for part, part_torch in zip(carry, carry_torch):
        np.testing.assert_allclose(np.asarray(part), part_torch.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("cell", CELLS)
def test_param_tree_matches_init(cell):
    """Same keys, shapes and dtypes as RecurrentStack.init; num_layers / direction inferred."""
    module = make_torch(cell, num_layers=2, bidirectional=True)
    params = rnn_params_from_torch(module.state_dict(), cell=cell)
    stack = RecurrentStack(cell, H, num_layers=2, bidirectional=True)
    init = stack.init(jax.random.key(0), jnp.zeros((B, T, D)))["params"]
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), dict(init))
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(params))


def test_gru_bias_split():
    """GRU: b_hr, b_hz fold into `bias`; b_hn stays apart as `hidden_bias`."""
    module = torch.nn.GRU(D, H)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}  # NumPy values work too
    p = rnn_params_from_torch(sd)["layer0_forward"]
    b_ih, b_hh = sd["bias_ih_l0"], sd["bias_hh_l0"]
    np.testing.assert_allclose(p["bias"][:2 * H], (b_ih + b_hh)[:2 * H], rtol=1e-6)
    np.testing.assert_array_equal(p["bias"][2 * H:], b_ih[2 * H:])
    np.testing.assert_array_equal(p["hidden_bias"], b_hh[2 * H:])
    np.testing.assert_array_equal(p["input_kernel"], sd["weight_ih_l0"].T)


def test_prefix_and_inference():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, D)
            self.rnn = torch.nn.GRU(D, H, num_layers=3, bidirectional=True)

    model = Model()
    params = rnn_params_from_torch(model.state_dict(), prefix="rnn.")
    assert sorted(params) == sorted(f"layer{i}_{d}" for i in range(3)
                                    for d in ("forward", "backward"))
    assert "hidden_bias" in params["layer2_backward"]  # gru inferred from 3 gates
    with pytest.raises(ValueError, match=r"prefix= one of \['rnn\.'\]"):
        rnn_params_from_torch(model.state_dict())


def test_cell_inference_defaults():
    assert "hidden_bias" not in rnn_params_from_torch(torch.nn.LSTM(D, H).state_dict())[
        "layer0_forward"]
    relu = torch.nn.RNN(D, H, nonlinearity="relu")
    assert rnn_config_from_torch(relu)["cell"] == "rnn_relu"
    # Elman weights do not say tanh or relu: both convert identically.
    a = rnn_params_from_torch(relu.state_dict())
    b = rnn_params_from_torch(relu.state_dict(), cell="rnn_relu")
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_config_from_torch():
    module = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True)
    assert rnn_config_from_torch(module) == {"cell": "lstm", "hidden_size": H, "num_layers": 2,
                                             "bidirectional": True, "input_size": D,
                                             "batch_first": True}
    assert rnn_config_from_torch(torch.nn.RNN(D, H))["cell"] == "rnn_tanh"
    assert rnn_config_from_torch(torch.nn.GRU(D, H))["batch_first"] is False
    with pytest.raises(ValueError, match="proj_size=2"):
        rnn_config_from_torch(torch.nn.LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match="not a torch.nn.RNN"):
        rnn_config_from_torch(torch.nn.Linear(D, H))


def test_error_missing_key():
    sd = dict(torch.nn.LSTM(D, H, num_layers=2, bidirectional=True).state_dict())
    del sd["weight_hh_l1_reverse"]
    with pytest.raises(ValueError, match=r"missing key 'weight_hh_l1_reverse'.*prefix="):
        rnn_params_from_torch(sd)
    sd = dict(torch.nn.LSTM(D, H).state_dict())
    del sd["bias_hh_l0"]  # one bias missing is not bias=False
    with pytest.raises(ValueError, match="missing key 'bias_hh_l0'"):
        rnn_params_from_torch(sd)
    with pytest.raises(ValueError, match="missing key 'weight_ih_l1'"):
        rnn_params_from_torch(torch.nn.LSTM(D, H).state_dict(), num_layers=2)
    with pytest.raises(ValueError, match="missing key 'weight_ih_l0_reverse'"):
        rnn_params_from_torch(torch.nn.LSTM(D, H).state_dict(), bidirectional=True)
    with pytest.raises(ValueError, match="no recurrent weights"):
        rnn_params_from_torch({"weight": np.zeros((2, 2))})


def test_error_proj_size():
    sd = torch.nn.LSTM(D, H, proj_size=3).state_dict()
    with pytest.raises(ValueError, match=r"proj_size > 0.*weight_hr|weight_hr.*proj_size"):
        rnn_params_from_torch(sd)


def test_error_contradictions():
    sd = torch.nn.GRU(D, H).state_dict()
    with pytest.raises(ValueError, match=r"cell='lstm' has 4 gate\(s\).*cell='gru'"):
        rnn_params_from_torch(sd, cell="lstm")
    with pytest.raises(ValueError, match="cell='gru'"):
        rnn_params_from_torch(torch.nn.RNN(D, H).state_dict(), cell="gru")
    with pytest.raises(ValueError, match="unknown cell"):
        rnn_params_from_torch(sd, cell="elman")
    bi = torch.nn.GRU(D, H, num_layers=2, bidirectional=True).state_dict()
    with pytest.raises(ValueError, match="bidirectional=False"):
        rnn_params_from_torch(bi, bidirectional=False)
    with pytest.raises(ValueError, match="num_layers=1"):
        rnn_params_from_torch(bi, num_layers=1)


def test_gate_table_matches_cells():
    assert _NUM_GATES == {name: c.num_gates for name, c in CELL_TYPES.items()}


def test_module_does_not_import_torch():
    # (jax does get imported, but by the `zoo` package's __init__, not by torch_rnn.)
    code = "import sys, zoo.convert.torch_rnn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
