"""rnnkit: recurrent neural networks as taught in the lectures, as real and fast software.

Cells compute one step; ``Recurrent`` unrolls any cell over time; ``Stack`` and
``Bidirectional`` compose layers; ``RNN``, ``LSTM`` and ``GRU`` build them the way
``torch.nn`` does and run its fused kernels where the configuration allows.
"""

from . import distributed, init, reference, vision
from .batching import BucketBatchSampler, lengths_to_mask, masked_mean, pack_batch, pad_batch
from .cells import GRUCell, LSTMCell, RNNCell
from .conv import ConvGRUCell, ConvLSTMCell
from .crf import LinearChainCRF
from .diagnostics import (
    gradients_through_time,
    hidden_gradient_norms,
    largest_singular_values,
    plot_gradient_norms,
)
from .init import init_cell, initialize
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
from .structures import EncoderDecoder, ManyToMany, ManyToOne, OneToMany, generate
from .tasks import caption, charlm, classify, lab, pixels, seq2seq, tag, video, wordlm
from .tasks import load as load_any
from .tasks.caption import CaptionConfig, Captioner
from .tasks.charlm import CharLM, CharLMConfig, load
from .tasks.classify import ClassifyConfig, SequenceClassifier
from .tasks.pixels import PixelConfig, PixelRNN
from .tasks.seq2seq import Seq2Seq, Seq2SeqConfig
from .tasks.sequences import RunConfig
from .tasks.tag import SequenceTagger, TagConfig
from .tasks.video import VideoClassifier, VideoConfig
from .tasks.wordlm import WordLM, WordLMConfig
from .tbptt import tbptt_windows, truncated_bptt
from .trainer import Trainer, TrainerConfig

__version__ = "0.1.0"

__all__ = [
    # cells
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "ConvGRUCell",
    "ConvLSTMCell",
    # layers and structures
    "Recurrent",
    "Bidirectional",
    "Stack",
    "RNN",
    "LSTM",
    "GRU",
    "ManyToOne",
    "ManyToMany",
    "OneToMany",
    "EncoderDecoder",
    "generate",
    "LinearChainCRF",
    # variable-length batches
    "pad_batch",
    "pack_batch",
    "lengths_to_mask",
    "masked_mean",
    "BucketBatchSampler",
    "reverse_padded",
    # training mechanics
    "detach_state",
    "truncated_bptt",
    "tbptt_windows",
    "Trainer",
    "TrainerConfig",
    "init_cell",
    "initialize",
    "gradients_through_time",
    "hidden_gradient_norms",
    "largest_singular_values",
    "plot_gradient_norms",
    # applications
    "CharLM",
    "CharLMConfig",
    "load",
    "SequenceClassifier",
    "ClassifyConfig",
    "SequenceTagger",
    "TagConfig",
    "RunConfig",
    "WordLM",
    "WordLMConfig",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Captioner",
    "CaptionConfig",
    "PixelRNN",
    "PixelConfig",
    "VideoClassifier",
    "VideoConfig",
    "load_any",
    # modules
    "distributed",
    "init",
    "reference",
    "charlm",
    "classify",
    "tag",
    "wordlm",
    "seq2seq",
    "caption",
    "pixels",
    "video",
    "lab",
    "vision",
]
