"""Convolutional recurrent cells: the LSTM and GRU with convolutions for matrix products.

The state is a feature map (B, C_h, H, W) and every product W x or U h becomes a
2-D convolution with 'same' padding, so the spatial size is kept (Shi et al. 2015,
ConvLSTM; Ballas et al. 2016, ConvGRU). ``input_size`` and ``hidden_size`` count
channels, so these cells stack and unroll exactly like the dense ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .cells import GRU_RESET_FORMS, State, _check_positive, lstm_pointwise


def _check_map(cell_name: str, x: Tensor, channels: int) -> None:
    if x.dim() < 4 or x.shape[-3] != channels:
        raise ValueError(
            f"{cell_name}: argument `input` must be (..., C, H, W) with C=input_size={channels}, "
            f"got shape {tuple(x.shape)}."
        )


class _ConvCell(nn.Module):
    num_gates: int = 1
    num_state_tensors: int = 1

    def __init__(
        self, input_size: int, hidden_size: int, kernel_size: int = 3, *, bias: bool = True
    ) -> None:
        super().__init__()
        _check_positive("input_size", input_size)
        _check_positive("hidden_size", hidden_size)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"Argument `kernel_size` must be a positive odd integer (for 'same' padding), "
                f"got {kernel_size!r}."
            )
        self.input_size, self.hidden_size, self.kernel_size = input_size, hidden_size, kernel_size
        self.bias = bias
        G, C, k = self.num_gates, hidden_size, kernel_size
        self.weight_ih = nn.Parameter(torch.empty(G * C, input_size, k, k))  # (G*C_h, C_in, k, k)
        self.weight_hh = nn.Parameter(torch.empty(G * C, C, k, k))  # (G*C_h, C_h, k, k)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * C))
            self.bias_hh = nn.Parameter(torch.empty(G * C))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size * self.kernel_size**2)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)

    def project_input(self, x: Tensor) -> Tensor:
        """W_ih * x + b_ih for any leading shape: (..., C_in, H, W) -> (..., G*C_h, H, W)."""
        _check_map(type(self).__name__, x, self.input_size)
        lead = x.shape[:-3]
        xp = self._conv(x.reshape(-1, *x.shape[-3:]), self.weight_ih, self.bias_ih)
        return xp.reshape(*lead, *xp.shape[-3:])

    def forward(self, x: Tensor, state: State | None = None, *, return_internals: bool = False):
        """One step. x: (B, C_in, H, W); state: the cell's state, zeros if None."""
        if state is None:
            state = self.init_state(
                x.shape[0], spatial_size=tuple(x.shape[-2:]), device=x.device, dtype=x.dtype
            )
        return self.recur(self.project_input(x), state, return_internals=return_internals)

    def state_shape(self, spatial_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        if spatial_size is None:
            return (self.hidden_size, 1, 1)  # broadcastable, e.g. for a learned initial state
        return (self.hidden_size, *spatial_size)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        spatial_size: tuple[int, ...] | None = None,
    ) -> State:
        """The zero state: (B, C_h, H, W), or a pair of them for ConvLSTM."""
        if spatial_size is None:
            raise ValueError(
                f"{type(self).__name__}.init_state needs argument `spatial_size` (H, W)."
            )
        device = device if device is not None else self.weight_hh.device
        dtype = dtype if dtype is not None else self.weight_hh.dtype
        shape = (batch_size, *self.state_shape(spatial_size))
        zeros = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.num_state_tensors)
        ]
        return zeros[0] if self.num_state_tensors == 1 else tuple(zeros)

    @staticmethod
    def output(state: State) -> Tensor:
        return state[0] if isinstance(state, tuple) else state

    @property
    def output_size(self) -> int:
        return self.hidden_size

    fused_mode = None

    @property
    def not_fused_reason(self) -> str:
        return f"{type(self).__name__} has no torch.nn kernel"

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, kernel_size={self.kernel_size}"
        return s if self.bias else s + ", bias=False"


class ConvLSTMCell(_ConvCell):
    r"""Convolutional LSTM (Shi et al. 2015, without the peephole terms).

    .. math::
        (i, f, g, o) = (\sigma, \sigma, \tanh, \sigma)
            \left(W_{ih} * x_t + b_{ih} + W_{hh} * h_{t-1} + b_{hh}\right)

        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)

    where * is a 2-D convolution with 'same' padding.

    Args:
        input_size: input channels C_in.
        hidden_size: state channels C_h.
        kernel_size: odd square kernel for both convolutions.
        forget_bias: added to the forget-gate bias after initialisation.

    State ``(h, c)``, each (B, C_h, H, W). Internals: ``i, f, g, o, c, h``.
    """

    num_gates = 4
    num_state_tensors = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        kernel_size: int = 3,
        *,
        bias: bool = True,
        forget_bias: float = 1.0,
    ) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size, kernel_size, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias and self.forget_bias:
            C = self.hidden_size
            with torch.no_grad():
                self.bias_ih[C : 2 * C] += self.forget_bias

    def recur(self, xp: Tensor, state: tuple[Tensor, Tensor], *, return_internals: bool = False):
        # xp: (B, 4C, H, W);  h, c: (B, C, H, W)
        h, c = state
        gates = xp + self._conv(h, self.weight_hh, self.bias_hh)
        h, c, internals = lstm_pointwise(gates, c, dim=-3)
        if return_internals:
            return (h, c), {**internals, "c": c, "h": h}
        return h, c


class ConvGRUCell(_ConvCell):
    r"""Convolutional GRU (Ballas et al. 2016).

    .. math::
        r_t = \sigma(W_r * x_t + U_r * h_{t-1} + b_r), \qquad
        z_t = \sigma(W_z * x_t + U_z * h_{t-1} + b_z)

        \tilde h_t = \tanh(W_n * x_t + U_n * (r_t \odot h_{t-1}) + b_n)
        \quad\text{(reset="before", the default)}

        h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t

    With ``reset="after"`` the candidate is
    :math:`\tanh(W_n * x_t + r_t \odot (U_n * h_{t-1} + b_{hn}))`, as in :class:`GRUCell`.

    State: h (B, C_h, H, W). Internals: ``r, z, n, h``.
    """

    num_gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        kernel_size: int = 3,
        *,
        bias: bool = True,
        reset: str = "before",
    ) -> None:
        if reset not in GRU_RESET_FORMS:
            raise ValueError(f"Argument `reset` must be one of {GRU_RESET_FORMS}, got {reset!r}.")
        self.reset = reset
        super().__init__(input_size, hidden_size, kernel_size, bias=bias)

    def recur(self, xp: Tensor, h: Tensor, *, return_internals: bool = False):
        # xp: (B, 3C, H, W);  h: (B, C, H, W)
        C = self.hidden_size
        x_r, x_z, x_n = xp.chunk(3, -3)
        b_rz, b_n = (None, None) if self.bias_hh is None else self.bias_hh.split([2 * C, C])
        h_r, h_z = self._conv(h, self.weight_hh[: 2 * C], b_rz).chunk(2, -3)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        if self.reset == "before":
            n = torch.tanh(x_n + self._conv(r * h, self.weight_hh[2 * C :], b_n))
        else:
            n = torch.tanh(x_n + r * self._conv(h, self.weight_hh[2 * C :], b_n))
        h = n + z * (h - n)
        if return_internals:
            return h, {"r": r, "z": z, "n": n, "h": h}
        return h

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset={self.reset!r}"
