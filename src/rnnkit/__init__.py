"""rnnkit: recurrent neural networks as taught in the lectures, as real and fast software."""

from .cells import GRUCell, LSTMCell, RNNCell
from .conv import ConvGRUCell, ConvLSTMCell
from .layers import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    Recurrent,
    Stack,
    detach_state,
    reverse_padded,
)

__version__ = "0.1.0"

__all__ = [
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "ConvGRUCell",
    "ConvLSTMCell",
    "Recurrent",
    "Bidirectional",
    "Stack",
    "RNN",
    "LSTM",
    "GRU",
    "detach_state",
    "reverse_padded",
]
