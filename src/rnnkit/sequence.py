r"""Whole-sequence kernels for the dense cells: the time loop with a hand-written backward.

The explicit path of :class:`rnnkit.Recurrent` can step any cell and let autograd record
every step: a dozen small nodes per step, each with its own bookkeeping, and a weight
gradient per step. For :class:`~rnnkit.RNNCell`, :class:`~rnnkit.LSTMCell` and
:class:`~rnnkit.GRUCell` (both reset forms) this module runs the same arithmetic as ONE
:class:`torch.autograd.Function` per sequence, with backpropagation through time written
out. Only the recurrent products are sequential; everything else happens for all steps
at once:

* before the loop, the input half of every step is one matrix product over T*B rows,
  ``XP = X W_ih^T + b``, where ``b`` holds ``b_ih`` and every part of ``b_hh`` that adds
  straight to a pre-activation (all of it but the reset="after" GRU's ``b_hn``);
* the loop adds ``h_{t-1} W_hh^T`` into XP in place (``addmm_``: no per-step copy) and
  applies the gates in place, in preallocated buffers;
* the backward loop does ``dh_t += dG_{t+1} W_hh`` in place and the gates' derivatives,
  whose factors that do not depend on the incoming gradient are computed for all steps
  before it, with the fused kernels autograd uses (``sigmoid_backward``, ...);
* after it, every weight gradient is one product over T*B rows: ``dW_hh = dG^T H_prev``,
  ``dW_ih = dXP^T X``, and the input gradient ``dX = dXP W_ih`` is one more.

These kernels are a backend, like torch's fused kernels (:mod:`rnnkit.backends`): they
compute the cells' own equations (:mod:`rnnkit.cells`, the one readable step) for a
whole sequence at once, in place, keeping what the hand-written backward needs, and the
tests hold them equal to the cells, values and gradients.

Measured on a 2-core CPU, a character-LM training step (benchmarks/bench_layers.py)
runs 1.2-1.3x as fast as stepping the cell under autograd, and the GRU and vanilla RNN
kernels beat torch.nn.GRU / torch.nn.RNN on CPU; the LSTM stays behind oneDNN's fused
LSTM, which the default (fused) path uses.

Backpropagation through time. ``dh_t`` is the whole gradient reaching ``h_t``: from the
output at step t, from step t+1 (through ``h_t`` as ``h_{t-1}`` there) and, at the last
step, from the final state. ``G_t`` are the pre-activations, ``dG_t`` their gradient,
``σ'(a) = a (1 - a)`` and ``tanh'(a) = 1 - a²`` written in terms of the activation ``a``.

RNN, ``h_t = f(XP_t + h_{t-1} W_hh^T)``::

    dG_t      = dh_t ⊙ f'(h_t)            f' = 1 - h_t² (tanh), [h_t > 0] (relu)
    dh_{t-1} = dout_{t-1} + dG_t W_hh

LSTM, ``(i, f, g, o) = (σ, σ, tanh, σ)(XP_t + h_{t-1} W_hh^T)``,
``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``::

    dc_t      = dc_{t+1} ⊙ f_{t+1} + dh_t ⊙ o_t tanh'(tanh c_t)
    dG_t      = [dc_t ⊙ g_t σ'(i_t),  dc_t ⊙ c_{t-1} σ'(f_t),
                 dc_t ⊙ i_t tanh'(g_t),  dh_t ⊙ tanh(c_t) σ'(o_t)]
    dh_{t-1} = dout_{t-1} + dG_t W_hh

GRU, reset after (torch's form), ``HP_t = h_{t-1} W_hh^T + [0, 0, b_hn]``,
``r, z = σ(XP_t + HP_t)``, ``n = tanh(XP_n + r ⊙ HP_n)``, ``h_t = n + z (h_{t-1} - n)``::

    dHP_t     = dh_t ⊙ [K_n hp_n σ'(r),  (h_{t-1} - n) σ'(z),  K_n r]
                with K_n = (1 - z) tanh'(n)
    dXP_t     = dHP_t, but dh_t ⊙ K_n in the candidate's block (not gated by r)
    dh_{t-1} = dout_{t-1} + dh_t ⊙ z + dHP_t W_hh

GRU, reset before (the lecture's form), ``r, z = σ(XP_rz + h_{t-1} W_rz^T)``,
``n = tanh(XP_n + (r ⊙ h_{t-1}) W_n^T)``, ``h_t = n + z (h_{t-1} - n)``::

    dG_z, dG_n = dh_t ⊙ (h_{t-1} - n) σ'(z),  dh_t ⊙ (1 - z) tanh'(n)
    d(rh)_t    = dG_n W_n
    dG_r       = d(rh)_t ⊙ h_{t-1} σ'(r)
    dh_{t-1}  = dout_{t-1} + dh_t ⊙ z + d(rh)_t ⊙ r + [dG_r, dG_z] W_rz

and ``dW_n = dG_n^T (r ⊙ H_prev)``.

Variable lengths. The batch is sorted longest first, as packing does, so the sequences
still running at step t are the first ``sizes[t]`` rows; every step computes those rows
only. Padded steps are never computed: their outputs stay zero, a sequence's final state
is the one after its last valid step, and in the backward pass its ``dh_n`` (and ``dc_n``)
enters at that same step. This is exactly what stepping the cell with a mask gives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .cells import GRUCell, LSTMCell, RNNCell, State, check_input_size

KERNELS = ("rnn_tanh", "rnn_relu", "lstm", "gru_after", "gru_before")


def sequence_kernel(cell: nn.Module) -> str | None:
    """The kernel of this module that runs `cell` over a whole sequence, or None.

    Only the exact dense cell classes qualify: a subclass may change the step.
    """
    kind = type(cell)
    if kind is RNNCell:
        return f"rnn_{cell.nonlinearity}"
    if kind is LSTMCell:
        return "lstm"
    if kind is GRUCell:
        return f"gru_{cell.reset}"
    return None


def run_sequence(
    cell: nn.Module, x: Tensor, state: State, lengths: Tensor | None = None
) -> tuple[Tensor, State]:
    """Run a dense cell over a time-major sequence as one autograd node.

    Args:
        cell: an :class:`RNNCell`, :class:`LSTMCell` or :class:`GRUCell`.
        x: (T, B, I) inputs.
        state: (B, H), or (h, c) for the LSTM: the state before the first step.
        lengths: (B,) int64 valid steps per sequence (1 <= length <= T), or None.

    Returns:
        output (T, B, H), zero after each sequence's length, and the state after each
        sequence's last valid step: what stepping the cell with a mask gives.
    """
    kernel = sequence_kernel(cell)
    if kernel is None:
        raise ValueError(
            f"Argument `cell` must be an RNNCell, LSTMCell or GRUCell, got {type(cell).__name__}."
        )
    check_input_size(type(cell).__name__, x, cell.input_size)
    T = x.shape[0]
    states = state if isinstance(state, tuple) else (state,)
    order = None
    if lengths is not None:
        lengths = lengths.cpu()
        if bool((lengths[:-1] < lengths[1:]).any()):
            # Longest first: the sequences still running at step t are the first rows.
            order = torch.argsort(lengths, descending=True, stable=True)
            lengths = lengths[order]
            x = x.index_select(1, order.to(x.device))
            states = tuple(s.index_select(0, order.to(s.device)) for s in states)
        x = x[: int(lengths[0])]  # steps after the longest sequence are all padding

    H2 = 2 * cell.hidden_size
    bias = None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh  # folded, see below
    inputs = (x, cell.weight_ih, bias, states[0])
    if kernel == "lstm":
        out, h_n, c_n = LSTMSequence.apply(*inputs, states[1], cell.weight_hh, lengths)
        final = (h_n, c_n)
    elif kernel == "gru_after":
        # r multiplies W_hn h + b_hn, so b_hn stays in the loop; the rest folds into XP.
        bias_hn = None
        if bias is not None:
            bias, bias_hn = torch.cat([bias[:H2], cell.bias_ih[H2:]]), cell.bias_hh[H2:]
        inputs = (x, cell.weight_ih, bias, states[0])
        out, final = GRUSequence.apply(*inputs, cell.weight_hh, bias_hn, lengths)
    elif kernel == "gru_before":
        out, final = GRUResetBeforeSequence.apply(*inputs, cell.weight_hh, lengths)
    else:
        out, final = RNNSequence.apply(*inputs, cell.weight_hh, lengths, cell.nonlinearity)

    if order is not None:
        unorder = torch.argsort(order)
        out = out.index_select(1, unorder.to(out.device))
        final = _map(lambda s: s.index_select(0, unorder.to(s.device)), final)
    if out.shape[0] < T:
        out = torch.cat([out, out.new_zeros(T - out.shape[0], *out.shape[1:])])
    return out, final


def _map(fn, state):
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


# -- shared plumbing of the four Functions ------------------------------------------------


class _Steps:
    """Which rows of a (T, B, ...) buffer each step works on.

    Without lengths, all B rows at every step. With lengths (sorted longest first), the
    first ``sizes[t]`` rows at step t; ``views(..., going_on=True)`` cuts step t to the
    rows that step t+1 also runs, where the backward pass adds step t+1's contribution.
    """

    def __init__(self, lengths: Tensor | None, T: int, B: int) -> None:
        self.lengths, self.T, self.B = lengths, T, B
        self.sizes = self.next_sizes = None
        if lengths is not None:
            self.sizes = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).sum(1).tolist()
            self.next_sizes = self.sizes[1:] + [0]

    def buffer(self, *shape: int, like: Tensor) -> Tensor:
        """A fresh buffer; zeros where some rows are never written (padded steps)."""
        new = torch.empty if self.lengths is None else torch.zeros
        return new(*shape, dtype=like.dtype, device=like.device)

    def views(self, *buffers: Tensor, going_on: bool = False) -> list:
        """Per-step views of (T, B, ...) buffers, each cut to the rows running at that step."""
        sizes = self.next_sizes if going_on else self.sizes
        if sizes is None:
            return [b.unbind(0) for b in buffers]
        return [[v[:n] for v, n in zip(b.unbind(0), sizes)] for b in buffers]

    def final(self, states: Tensor) -> Tensor:
        """Each sequence's state after its last valid step. states: (T+1, B, H), [0] the start."""
        if self.lengths is None:
            return states[-1].clone()
        rows = torch.arange(self.B, device=states.device)
        return states[self.lengths.to(states.device), rows]

    def output_grads(self, d_out: Tensor) -> Tensor:
        """A fresh contiguous copy of d_out to accumulate dh_t in; zero at padded steps,
        whose outputs are constant zeros."""
        if self.lengths is None:
            return d_out.clone(memory_format=torch.contiguous_format)
        running = torch.arange(self.T).unsqueeze(1) < self.lengths.unsqueeze(0)  # (T, B)
        return d_out * running.to(d_out.device, d_out.dtype).unsqueeze(2)

    def add_at_last_steps(self, grads: Tensor, d_final: Tensor) -> Tensor:
        """grads (T, B, H) += the final state's gradient at each sequence's last step."""
        if self.lengths is None:
            grads[-1] += d_final
        else:
            rows = torch.arange(self.B, device=grads.device)
            grads.index_put_((self.lengths.to(grads.device) - 1, rows), d_final, accumulate=True)
        return grads


def _project_input(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """XP = x W_ih^T + b for every step in one product: (T, B, I) -> a fresh (T, B, G*H).

    Also returns x as (T*B, I), the operand of the weight gradient (a copy when x is a
    transposed batch-first input: made once, kept for the backward pass).
    """
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)
    xp = torch.mm(x2, weight_ih.t()) if bias is None else torch.addmm(bias, x2, weight_ih.t())
    return xp.view(T, B, -1), x2


def _input_grads(ctx, dxp: Tensor, x2: Tensor, weight_ih: Tensor) -> tuple:
    """Gradients of XP = x W_ih^T + b wrt x, W_ih and b: one product each, all steps."""
    T, B, _ = dxp.shape
    dxp2 = dxp.view(T * B, -1)
    need = ctx.needs_input_grad
    dx = (dxp2 @ weight_ih).view(T, B, -1) if need[0] else None
    dW_ih = dxp2.t() @ x2 if need[1] else None
    db = dxp2.sum(0) if need[2] else None
    return dx, dW_ih, db


# Fused derivative kernels (what autograd itself uses): one pass instead of three.
_SIGMOID_BACKWARD = torch.ops.aten.sigmoid_backward.grad_input
_TANH_BACKWARD = torch.ops.aten.tanh_backward.grad_input
_RELU_BACKWARD = torch.ops.aten.threshold_backward.grad_input


def _times_sigmoid_grad(grad: Tensor, a: Tensor, *, out: Tensor) -> Tensor:
    """out = grad ⊙ σ'(x), given the activation a = σ(x): grad ⊙ a (1 - a)."""
    return _SIGMOID_BACKWARD(grad, a, grad_input=out)


def _times_tanh_grad(grad: Tensor, a: Tensor, *, out: Tensor) -> Tensor:
    """out = grad ⊙ tanh'(x), given the activation a = tanh(x): grad ⊙ (1 - a²)."""
    return _TANH_BACKWARD(grad, a, grad_input=out)


# -- the kernels ---------------------------------------------------------------------------


class RNNSequence(torch.autograd.Function):
    """h_t = f(x_t W_ih^T + b + h_{t-1} W_hh^T) for t = 1..T; f = tanh or relu."""

    @staticmethod
    def forward(ctx, x, weight_ih, bias, h0, weight_hh, lengths, nonlinearity):
        # x: (T, B, I);  h0: (B, H);  weight_ih: (H, I);  weight_hh: (H, H);  bias: (H,)
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        steps = _Steps(lengths, T, B)
        pre, x2 = _project_input(x, weight_ih, bias)  # (T, B, H), the pre-activations in place
        hs = steps.buffer(T + 1, B, H, like=pre)  # h_0 .. h_T
        hs[0] = h0
        W_t = weight_hh.t().contiguous()  # (H, G*H): a little faster in the product
        for pre_t, h_prev, h in zip(*steps.views(pre, hs[:-1], hs[1:])):
            pre_t.addmm_(h_prev, W_t)
            if nonlinearity == "tanh":
                torch.tanh(pre_t, out=h)
            else:
                torch.clamp_min(pre_t, 0, out=h)  # relu
        ctx.save_for_backward(x2, weight_ih, hs, weight_hh)
        ctx.steps, ctx.nonlinearity = steps, nonlinearity
        return hs[1:], steps.final(hs)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n):
        x2, weight_ih, hs, W = ctx.saved_tensors
        steps = ctx.steps
        T, B, H = d_out.shape
        dG = steps.buffer(T, B, H, like=d_out)  # = dXP
        dH = steps.add_at_last_steps(steps.output_grads(d_out), dh_n)  # dh_t
        dGs, dhs, hs_t = steps.views(dG, dH, hs[1:])
        (dhs_going_on,) = steps.views(dH, going_on=True)
        for t in reversed(range(T)):
            if t + 1 < T:
                dhs_going_on[t].addmm_(dGs[t + 1], W)
            if ctx.nonlinearity == "tanh":
                _times_tanh_grad(dhs[t], hs_t[t], out=dGs[t])
            else:
                _RELU_BACKWARD(dhs[t], hs_t[t], 0, grad_input=dGs[t])  # dh where h > 0
        dh0 = dG[0] @ W
        dW = dG.view(T * B, H).t() @ hs[:-1].reshape(T * B, H) if ctx.needs_input_grad[4] else None
        return *_input_grads(ctx, dG, x2, weight_ih), dh0, dW, None, None


class LSTMSequence(torch.autograd.Function):
    """(i, f, g, o) = (σ, σ, tanh, σ)(x_t W_ih^T + b + h_{t-1} W_hh^T);
    c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)."""

    @staticmethod
    def forward(ctx, x, weight_ih, bias, h0, c0, weight_hh, lengths):
        # x: (T, B, I);  h0, c0: (B, H);  weight_ih: (4H, I);  weight_hh: (4H, H);  bias: (4H,)
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        steps = _Steps(lengths, T, B)
        gates, x2 = _project_input(x, weight_ih, bias)  # (T, B, 4H): i, f, g, o, made in place
        hs = steps.buffer(T + 1, B, H, like=gates)  # h_0 .. h_T
        cs = steps.buffer(T + 1, B, H, like=gates)  # c_0 .. c_T
        tanh_cs = steps.buffer(T, B, H, like=gates)  # tanh(c_1) .. tanh(c_T)
        hs[0], cs[0] = h0, c0
        W_t = weight_hh.t().contiguous()  # (H, G*H): a little faster in the product
        for a, if_, i, f, g, o, h_prev, h, c_prev, c, tc in zip(
            *steps.views(
                gates,
                gates[..., : 2 * H],
                *gates.chunk(4, 2),
                hs[:-1],
                hs[1:],
                cs[:-1],
                cs[1:],
                tanh_cs,
            )
        ):
            a.addmm_(h_prev, W_t)
            if_.sigmoid_()
            g.tanh_()
            o.sigmoid_()
            torch.mul(f, c_prev, out=c).addcmul_(i, g)
            torch.mul(o, torch.tanh(c, out=tc), out=h)
        ctx.save_for_backward(x2, weight_ih, gates, hs, cs, tanh_cs, weight_hh)
        ctx.steps = steps
        return hs[1:], steps.final(hs), steps.final(cs)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n, dc_n):
        x2, weight_ih, gates, hs, cs, tanh_cs, W = ctx.saved_tensors
        steps = ctx.steps
        T, B, H = d_out.shape
        i, f, g, o = gates.chunk(4, 2)  # (T, B, H) each
        # What dc_t (first three blocks) and dh_t (last) are multiplied by in dG_t.
        K = torch.empty_like(gates)
        K_i, K_f, K_g, K_o = K.chunk(4, 2)
        _times_sigmoid_grad(g, i, out=K_i)
        _times_sigmoid_grad(cs[:-1], f, out=K_f)
        _times_tanh_grad(i, g, out=K_g)
        _times_sigmoid_grad(tanh_cs, o, out=K_o)
        K_c = _times_tanh_grad(o, tanh_cs, out=torch.empty_like(o))  # dh_t -> dc_t
        dG = steps.buffer(T, B, 4 * H, like=d_out)  # = dXP
        dH = steps.add_at_last_steps(steps.output_grads(d_out), dh_n)  # dh_t
        dC = steps.add_at_last_steps(torch.zeros_like(dH), dc_n)  # dc_t
        K_ifgs, K_os, dG_ifgs, dG_os, dGs, K_cs, fs, dhs, dcs, dcs_ = steps.views(
            K[..., : 3 * H].unflatten(2, (3, H)),
            K[..., 3 * H :],
            dG[..., : 3 * H].unflatten(2, (3, H)),
            dG[..., 3 * H :],
            dG,
            K_c,
            f,
            dH,
            dC,
            dC.unsqueeze(2),
        )
        dhs_going_on, dcs_going_on = steps.views(dH, dC, going_on=True)
        for t in reversed(range(T)):
            if t + 1 < T:
                dhs_going_on[t].addmm_(dGs[t + 1], W)
                dcs_going_on[t].addcmul_(dcs[t + 1], fs[t + 1])
            dcs[t].addcmul_(dhs[t], K_cs[t])
            torch.mul(K_ifgs[t], dcs_[t], out=dG_ifgs[t])
            torch.mul(K_os[t], dhs[t], out=dG_os[t])
        dh0, dc0 = dG[0] @ W, dC[0] * f[0]
        dW = None
        if ctx.needs_input_grad[5]:
            dW = dG.view(T * B, 4 * H).t() @ hs[:-1].reshape(T * B, H)
        return *_input_grads(ctx, dG, x2, weight_ih), dh0, dc0, dW, None


class GRUSequence(torch.autograd.Function):
    """GRU with the reset gate after the recurrent product (torch.nn.GRU's form).

    HP_t = h_{t-1} W_hh^T + [0, 0, b_hn];  r, z = σ(XP_rz + HP_rz);
    n = tanh(XP_n + r HP_n);  h_t = n + z (h_{t-1} - n). b_hr, b_hz are folded into XP.
    """

    @staticmethod
    def forward(ctx, x, weight_ih, bias, h0, weight_hh, bias_hn, lengths):
        # x: (T, B, I);  h0: (B, H);  weight_ih: (3H, I);  weight_hh: (3H, H);  bias_hn: (H,)
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        steps = _Steps(lengths, T, B)
        gates, x2 = _project_input(x, weight_ih, bias)  # (T, B, 3H): r, z, n, made in place
        hp = gates.new_zeros(3 * H)  # HP_t, starting from its bias [0, 0, b_hn]
        if bias_hn is not None:
            hp[2 * H :] = bias_hn
        hp = hp.expand(T, B, 3 * H).contiguous()
        hs = steps.buffer(T + 1, B, H, like=gates)  # h_0 .. h_T
        hs[0] = h0
        W_t = weight_hh.t().contiguous()  # (H, G*H): a little faster in the product
        for hp_t, hp_rz, hp_n, rz, r, z, n, h_prev, h in zip(
            *steps.views(
                hp,
                hp[..., : 2 * H],
                hp[..., 2 * H :],
                gates[..., : 2 * H],
                *gates.chunk(3, 2),
                hs[:-1],
                hs[1:],
            )
        ):
            hp_t.addmm_(h_prev, W_t)
            rz.add_(hp_rz).sigmoid_()
            n.addcmul_(r, hp_n).tanh_()
            torch.lerp(n, h_prev, z, out=h)  # n + z (h_prev - n)
        ctx.save_for_backward(x2, weight_ih, gates, hp, hs, weight_hh)
        ctx.steps = steps
        return hs[1:], steps.final(hs)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n):
        x2, weight_ih, gates, hp, hs, W = ctx.saved_tensors
        steps = ctx.steps
        T, B, H = d_out.shape
        r, z, n = gates.chunk(3, 2)  # (T, B, H) each
        K_n = _times_tanh_grad(1 - z, n, out=torch.empty_like(n))  # dh_t -> d(pre-activation n)
        # What dh_t is multiplied by in dHP_t: [K_n hp_n σ'(r), (h_{t-1} - n) σ'(z), K_n r].
        K = torch.empty_like(gates)
        K_r, K_z, K_nr = K.chunk(3, 2)
        _times_sigmoid_grad(K_n * hp[..., 2 * H :], r, out=K_r)
        _times_sigmoid_grad(hs[:-1] - n, z, out=K_z)
        torch.mul(K_n, r, out=K_nr)
        dHP = steps.buffer(T, B, 3 * H, like=d_out)
        dH = steps.add_at_last_steps(steps.output_grads(d_out), dh_n)  # dh_t
        Ks, dHP3s, dHPs, dhs, dhs_, zs = steps.views(
            K.unflatten(2, (3, H)), dHP.unflatten(2, (3, H)), dHP, dH, dH.unsqueeze(2), z
        )
        (dhs_going_on,) = steps.views(dH, going_on=True)
        for t in reversed(range(T)):
            if t + 1 < T:
                dhs_going_on[t].addcmul_(dhs[t + 1], zs[t + 1]).addmm_(dHPs[t + 1], W)
            torch.mul(Ks[t], dhs_[t], out=dHP3s[t])
        dh0 = torch.addmm(dH[0] * z[0], dHP[0], W)
        dW = None
        if ctx.needs_input_grad[4]:
            dW = dHP.view(T * B, 3 * H).t() @ hs[:-1].reshape(T * B, H)
        d_bias_hn = dHP[..., 2 * H :].sum((0, 1)) if ctx.needs_input_grad[5] else None
        # dHP becomes dXP: the same but in the candidate's block, where r does not enter.
        torch.mul(dH, K_n, out=dHP[..., 2 * H :])
        return *_input_grads(ctx, dHP, x2, weight_ih), dh0, dW, d_bias_hn, None


class GRUResetBeforeSequence(torch.autograd.Function):
    """GRU with the reset gate before the recurrent product (the lecture's form).

    r, z = σ(XP_rz + h_{t-1} W_rz^T);  n = tanh(XP_n + (r h_{t-1}) W_n^T);
    h_t = n + z (h_{t-1} - n). All of b_hh is folded into XP.
    """

    @staticmethod
    def forward(ctx, x, weight_ih, bias, h0, weight_hh, lengths):
        # x: (T, B, I);  h0: (B, H);  weight_ih: (3H, I);  weight_hh: (3H, H) = [W_rz; W_n]
        T, B, _ = x.shape
        H = weight_hh.shape[1]
        steps = _Steps(lengths, T, B)
        gates, x2 = _project_input(x, weight_ih, bias)  # (T, B, 3H): r, z, n, made in place
        rhs = steps.buffer(T, B, H, like=gates)  # r_t h_{t-1}
        hs = steps.buffer(T + 1, B, H, like=gates)  # h_0 .. h_T
        hs[0] = h0
        W_rz_t, W_n_t = weight_hh[: 2 * H].t().contiguous(), weight_hh[2 * H :].t().contiguous()
        for rz, r, z, n, rh, h_prev, h in zip(
            *steps.views(gates[..., : 2 * H], *gates.chunk(3, 2), rhs, hs[:-1], hs[1:])
        ):
            rz.addmm_(h_prev, W_rz_t).sigmoid_()
            n.addmm_(torch.mul(r, h_prev, out=rh), W_n_t).tanh_()
            torch.lerp(n, h_prev, z, out=h)  # n + z (h_prev - n)
        ctx.save_for_backward(x2, weight_ih, gates, rhs, hs, weight_hh)
        ctx.steps = steps
        return hs[1:], steps.final(hs)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, dh_n):
        x2, weight_ih, gates, rhs, hs, W = ctx.saved_tensors
        steps = ctx.steps
        T, B, H = d_out.shape
        r, z, n = gates.chunk(3, 2)  # (T, B, H) each
        h_prev = hs[:-1]
        # What dh_t is multiplied by in dG_z and dG_n, and d(rh)_t in dG_r.
        K_zn = torch.empty(T, B, 2 * H, dtype=gates.dtype, device=gates.device)
        _times_sigmoid_grad(h_prev - n, z, out=K_zn[..., :H])
        _times_tanh_grad(1 - z, n, out=K_zn[..., H:])
        K_r = _times_sigmoid_grad(h_prev, r, out=torch.empty_like(r))
        dG = steps.buffer(T, B, 3 * H, like=d_out)  # = dXP
        d_rh = steps.buffer(T, B, H, like=d_out)  # d(r h_{t-1})
        dH = steps.add_at_last_steps(steps.output_grads(d_out), dh_n)  # dh_t
        W_rz, W_n = W[: 2 * H], W[2 * H :]
        K_zns, K_rs, dG_zns, dG_rzs, dG_rs, dG_ns, d_rhs, dhs, dhs_, rs, zs = steps.views(
            K_zn.unflatten(2, (2, H)),
            K_r,
            dG[..., H:].unflatten(2, (2, H)),
            dG[..., : 2 * H],
            dG[..., :H],
            dG[..., 2 * H :],
            d_rh,
            dH,
            dH.unsqueeze(2),
            r,
            z,
        )
        (dhs_going_on,) = steps.views(dH, going_on=True)
        for t in reversed(range(T)):
            if t + 1 < T:
                dh = dhs_going_on[t].addcmul_(dhs[t + 1], zs[t + 1])
                dh.addcmul_(d_rhs[t + 1], rs[t + 1]).addmm_(dG_rzs[t + 1], W_rz)
            torch.mul(K_zns[t], dhs_[t], out=dG_zns[t])
            torch.mul(torch.mm(dG_ns[t], W_n, out=d_rhs[t]), K_rs[t], out=dG_rs[t])
        dh0 = torch.addmm(dH[0] * z[0] + d_rh[0] * r[0], dG[0, :, : 2 * H], W_rz)
        dW = None
        if ctx.needs_input_grad[4]:
            dG2 = dG.view(T * B, 3 * H)
            dW = torch.cat(
                [
                    dG2[:, : 2 * H].t() @ h_prev.reshape(T * B, H),
                    dG2[:, 2 * H :].t() @ rhs.view(T * B, H),
                ]
            )
        return *_input_grads(ctx, dG, x2, weight_ih), dh0, dW, None
