"""Recurrent cells: one time step each.

Every cell follows one contract, so that one :class:`rnnkit.Recurrent` layer can
unroll any of them:

* ``state = cell(x_t, state)`` computes one step; ``cell(x_t, state,
  return_internals=True)`` also returns a dict of the step's gates and memory.
* ``cell.init_state(batch_size)`` gives the zero state.
* ``cell.output(state)`` is the part of the state the next layer sees (``h``).
* The step is split in two so a layer can hoist the input half out of the time
  loop: ``cell.project_input(x)`` is ``W_ih x + b_ih`` and works on any number of
  leading dimensions (all time steps at once); ``cell.recur(xp_t, state)`` is the
  sequential rest.

Parameters use PyTorch's names and layouts (``weight_ih`` is ``(G*H, I)`` with the
gate blocks in torch's order), so weights copy straight into ``torch.nn.LSTM``.
The readout ``y_t = W_hy h_t`` of the lecture's vanilla RNN is not part of the
cell: tasks put a ``torch.nn.Linear`` on top of the layer's outputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, ...]

NONLINEARITIES = ("tanh", "relu")
GRU_RESET_FORMS = ("before", "after")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {value!r}.")


def check_input_size(cell_name: str, x: Tensor, expected: int, dim: int = -1) -> None:
    """Raise a ValueError naming `input` when x's feature dimension is not `expected`."""
    if x.dim() == 0 or x.shape[dim] != expected:
        raise ValueError(
            f"{cell_name}: argument `input` has feature size "
            f"{x.shape[dim] if x.dim() else 'none'} (shape {tuple(x.shape)}), "
            f"expected input_size={expected}."
        )


class _DenseCell(nn.Module):
    """Shared plumbing of the three dense cells: parameters, input projection, state."""

    num_gates: int = 1
    num_state_tensors: int = 1  # h, or (h, c) for the LSTM

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True) -> None:
        super().__init__()
        _check_positive("input_size", input_size)
        _check_positive("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        G, H = self.num_gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))  # (G*H, H)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * H))
            self.bias_hh = nn.Parameter(torch.empty(G * H))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    # -- the contract ---------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih for any leading shape: (..., I) -> (..., G*H)."""
        check_input_size(type(self).__name__, x, self.input_size)
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x: Tensor, state: State | None = None, *, return_internals: bool = False):
        """One step. x: (B, I); state: the cell's state, zeros if None."""
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        return self.recur(self.project_input(x), state, return_internals=return_internals)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        spatial_size: tuple[int, ...] | None = None,
    ) -> State:
        """The zero state: h of shape (B, H), or (h, c) for the LSTM."""
        device = device if device is not None else self.weight_hh.device
        dtype = dtype if dtype is not None else self.weight_hh.dtype
        zeros = [
            torch.zeros(batch_size, *self.state_shape(), device=device, dtype=dtype)
            for _ in range(self.num_state_tensors)
        ]
        return zeros[0] if self.num_state_tensors == 1 else tuple(zeros)

    def state_shape(self, spatial_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """The shape of one state tensor without the batch dimension."""
        return (self.hidden_size,)

    @staticmethod
    def output(state: State) -> Tensor:
        """The part of the state that is the step's output: h."""
        return state[0] if isinstance(state, tuple) else state

    @property
    def output_size(self) -> int:
        return self.hidden_size

    # -- the fused-kernel hooks (see rnnkit.layers) -------------------------------
    @property
    def fused_mode(self) -> str | None:
        """The torch.nn kernel that computes exactly this cell, or None."""
        return None

    @property
    def not_fused_reason(self) -> str | None:
        return f"{type(self).__name__} has no torch.nn kernel" if self.fused_mode is None else None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias else s + ", bias=False"


class RNNCell(_DenseCell):
    r"""The vanilla (Elman) recurrent cell.

    .. math::
        h_t = f(W_{hh} h_{t-1} + W_{xh} x_t + b), \qquad f \in \{\tanh, \mathrm{ReLU}\}

    ``weight_ih`` is :math:`W_{xh}` (H, I), ``weight_hh`` is :math:`W_{hh}` (H, H) and
    :math:`b` = ``bias_ih + bias_hh`` (two vectors, as in torch, so weights copy over).

    Args:
        input_size: features of x_t.
        hidden_size: features of h_t.
        nonlinearity: ``"tanh"`` (the lecture's) or ``"relu"`` (with the identity
            initialisation this is the IRNN).
        bias: whether to learn b.

    Internals (``return_internals=True``): ``h``.
    """

    num_gates = 1

    def __init__(
        self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh", bias: bool = True
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"Argument `nonlinearity` must be one of {NONLINEARITIES}, got {nonlinearity!r}."
            )
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias=bias)

    def recur(self, xp: Tensor, h: Tensor, *, return_internals: bool = False):
        # xp: (B, H) = W_xh x_t + b_ih;  h: (B, H)
        pre = xp + nn.functional.linear(h, self.weight_hh, self.bias_hh)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return (h, {"h": h}) if return_internals else h

    @property
    def fused_mode(self) -> str:
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


def lstm_pointwise(gates: Tensor, c: Tensor, dim: int) -> tuple[Tensor, Tensor, dict]:
    """The LSTM's elementwise half, shared by the dense and convolutional cells.

    gates: the four pre-activations concatenated along `dim` in torch's order i, f, g, o.
    """
    i, f, g, o = gates.chunk(4, dim)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c, {"i": i, "f": f, "g": g, "o": o}


class LSTMCell(_DenseCell):
    r"""Long short-term memory (Hochreiter & Schmidhuber 1997, with a forget gate).

    .. math::
        \begin{pmatrix} i \\ f \\ g \\ o \end{pmatrix} =
        \begin{pmatrix} \sigma \\ \sigma \\ \tanh \\ \sigma \end{pmatrix}
        \left( W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \right)

        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)

    i, f, o are the input, forget and output gates, g the candidate memory
    (the lecture's :math:`\tilde c`). Gate blocks are stacked in torch's order
    i, f, g, o, so ``weight_ih`` is (4H, I) and ``weight_hh`` (4H, H).

    Args:
        input_size, hidden_size, bias: as for :class:`RNNCell`.
        forget_bias: added to the forget-gate block of ``bias_ih`` after the uniform
            initialisation, so that the cell remembers by default (Gers et al. 2000;
            Jozefowicz et al. 2015). 0 gives torch's initialisation.

    State: ``(h, c)``, each (B, H). Internals: ``i, f, g, o, c, h``.
    """

    num_gates = 4
    num_state_tensors = 2

    def __init__(
        self, input_size: int, hidden_size: int, *, bias: bool = True, forget_bias: float = 1.0
    ) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias and self.forget_bias:
            H = self.hidden_size
            with torch.no_grad():
                self.bias_ih[H : 2 * H] += self.forget_bias

    def recur(self, xp: Tensor, state: tuple[Tensor, Tensor], *, return_internals: bool = False):
        # xp: (B, 4H);  h, c: (B, H)
        h, c = state
        gates = xp + nn.functional.linear(h, self.weight_hh, self.bias_hh)  # (B, 4H)
        h, c, internals = lstm_pointwise(gates, c, dim=-1)
        if return_internals:
            return (h, c), {**internals, "c": c, "h": h}
        return h, c

    @property
    def fused_mode(self) -> str:
        return "LSTM"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_bias={self.forget_bias}"


def gru_pointwise(xp: Tensor, hp: Tensor, h: Tensor, dim: int) -> tuple[Tensor, dict]:
    """The GRU's elementwise half in the 'after' (cuDNN) form.

    xp = W_ih x + b_ih and hp = W_hh h + b_hh, both with blocks r, z, n along `dim`.
    """
    x_r, x_z, x_n = xp.chunk(3, dim)
    h_r, h_z, h_n = hp.chunk(3, dim)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    h = n + z * (h - n)  # = z*h + (1-z)*n
    return h, {"r": r, "z": z, "n": n}


class GRUCell(_DenseCell):
    r"""Gated recurrent unit (Cho et al. 2014).

    .. math::
        r_t = \sigma(W_r x_t + b_{ir} + U_r h_{t-1} + b_{hr}), \qquad
        z_t = \sigma(W_z x_t + b_{iz} + U_z h_{t-1} + b_{hz})

        \text{reset="before"} \text{ (the lecture's form):}\quad
        \tilde h_t = \tanh(W_n x_t + b_{in} + U_n (r_t \odot h_{t-1}) + b_{hn})

        \text{reset="after"} \text{ (cuDNN / torch.nn.GRU):}\quad
        \tilde h_t = \tanh(W_n x_t + b_{in} + r_t \odot (U_n h_{t-1} + b_{hn}))

        h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t

    r is the reset gate and z the update gate (the lecture's u). Gate blocks are
    stacked in torch's order r, z, n: ``weight_ih`` is (3H, I), ``weight_hh`` (3H, H).
    Both forms share the parameters, so a model can be switched between them.

    Args:
        input_size, hidden_size, bias: as for :class:`RNNCell`.
        reset: where the reset gate applies, ``"before"`` or ``"after"`` the
            recurrent matrix product. Only ``"after"`` has a fused torch kernel.

    Internals: ``r, z, n, h`` (n is the candidate :math:`\tilde h`).
    """

    num_gates = 3

    def __init__(
        self, input_size: int, hidden_size: int, *, bias: bool = True, reset: str = "after"
    ) -> None:
        if reset not in GRU_RESET_FORMS:
            raise ValueError(f"Argument `reset` must be one of {GRU_RESET_FORMS}, got {reset!r}.")
        self.reset = reset
        super().__init__(input_size, hidden_size, bias=bias)

    def recur(self, xp: Tensor, h: Tensor, *, return_internals: bool = False):
        # xp: (B, 3H) = W_ih x + b_ih;  h: (B, H)
        if self.reset == "after":
            hp = nn.functional.linear(h, self.weight_hh, self.bias_hh)  # (B, 3H)
            h, internals = gru_pointwise(xp, hp, h, dim=-1)
        else:
            H = self.hidden_size
            W_rz, W_n = self.weight_hh[: 2 * H], self.weight_hh[2 * H :]
            b_rz, b_n = (None, None) if self.bias_hh is None else self.bias_hh.split([2 * H, H])
            x_r, x_z, x_n = xp.chunk(3, -1)
            h_r, h_z = nn.functional.linear(h, W_rz, b_rz).chunk(2, -1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + nn.functional.linear(r * h, W_n, b_n))
            h = n + z * (h - n)
            internals = {"r": r, "z": z, "n": n}
        if return_internals:
            return h, {**internals, "h": h}
        return h

    @property
    def fused_mode(self) -> str | None:
        return "GRU" if self.reset == "after" else None

    @property
    def not_fused_reason(self) -> str | None:
        if self.reset == "before":
            return (
                "GRUCell(reset='before') has no torch.nn kernel (torch.nn.GRU resets after W_hh h)"
            )
        return None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset={self.reset!r}"
