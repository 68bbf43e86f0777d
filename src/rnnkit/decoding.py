"""Producing sequences from a model, one token at a time: the lecture's sampling loop.

::

    for t in range(max_length):
        scores, state = step(ids, state)       # (N, V): the model reads the previous token
        scores = scores / temperature          # T < 1 sharpens, T > 1 flattens; T = 0: argmax
        probs = softmax(scores)                # after top-k / top-p filtering, if asked
        ids = draw(probs)                      # (N,): one token per stream
        # ... and feed ids back in

That loop is :func:`decode`; :func:`greedy` and :func:`sample` run it and collect the
tokens, :func:`beam_search` keeps the k most likely prefixes instead of one, and
:func:`complete` is the lecture's spelling completion built on it; :func:`log_prob`
runs it the other way, feeding given sequences to score them, and
:func:`minimum_bayes_risk` picks, of several candidates, the one the others agree
with most. Everything here
works over any model given as a plain callable::

    step(ids, state) -> (scores, state)

``ids`` (N,) are the previous tokens of N streams, ``scores`` (N, V) the next token's
unnormalised log-probabilities (logits). ``state`` is whatever the model carries from
step to step: a tensor or a (possibly nested) tuple or list of tensors, each with the
batch as dim 0, or None before the first step. The loop never looks inside it; beam
search reorders its rows with :func:`select_state`. (A :class:`rnnkit.Stack` keeps its
state as (L, B, H): a step function for beam search hands it over as
``state.transpose(0, 1)``.) Token ids and scores may also be NumPy arrays: the fast
character-model stepper runs the loop on them.

The character model (:meth:`rnnkit.CharLM.generate`, :meth:`rnnkit.CharLM.complete`),
:func:`rnnkit.structures.generate` and the toy ``hello`` model all produce their
sequences here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

State = Any  # Tensor | ndarray | tuple/list of States | None, each tensor batch-first
Step = Callable[[Any, State], tuple[Any, State]]
Generator = torch.Generator | np.random.Generator


# -- the loop ------------------------------------------------------------------------------


def decode(
    step: Step,
    ids: Any,
    state: State,
    max_length: int,
    pick: Callable[[Any], Any] | None = None,
    *,
    end: int | Collection[int] | None = None,
) -> Iterator[Any]:
    """The lecture's loop: read the previous token, choose the next, feed it back.

    Yields each step's chosen ids (N,), `max_length` times, or until every stream has
    chosen an `end` id (the step that chooses it is yielded; streams that ended early
    keep being stepped with the rest of the batch).

    Args:
        step: ``step(ids, state) -> (scores (N, V), state)``.
        ids: (N,) the tokens the streams start from (a start token, a prime's last).
        state: the model's state before reading `ids`.
        pick: scores (N, V) -> next ids (N,); default the argmax (greedy). Any
            callable works, e.g. ``functools.partial(next_token, temperature=0.8)``,
            or one that maps outputs to the next input vectors.
        end: an end id or a set of them; None runs to `max_length`.
    """
    pick = pick or argmax
    ends = _end_ids(end)
    done = None
    for _ in range(max_length):
        scores, state = step(ids, state)  # (N, V)
        ids = pick(scores)  # (N,)
        yield ids
        if ends is not None:
            chosen = torch.as_tensor(ids)
            hit = torch.isin(chosen, ends.to(chosen.device))  # (N,)
            done = hit if done is None else done | hit
            if bool(done.all()):
                return


def argmax(scores: Any) -> Any:
    """The most likely token of each row: scores (N, V) -> (N,). The T -> 0 limit."""
    return scores.argmax(-1)


# -- one step's choice: temperature, top-k / top-p, the draw ---------------------------------


def apply_temperature(scores: Any, temperature: float) -> Any:
    """scores / T: the one temperature rule, for tensors and NumPy arrays alike.

    softmax(scores / T) sharpens the distribution for T < 1 and flattens it for
    T > 1; T = 1 returns `scores` itself. T = 0 is the limit argmax, taken by
    :func:`next_token` (it cannot divide).
    """
    if temperature <= 0:
        raise ValueError(
            f"Argument `temperature` must be > 0 to divide by (0 means argmax), got {temperature!r}"
        )
    return scores if temperature == 1.0 else scores / temperature


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Keep the `top_k` largest logits and the smallest set of the most likely tokens
    whose probability reaches `top_p` (nucleus); the rest become -inf. logits: (N, V).
    Ties with the k-th largest logit are kept."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before this one already >= p
        sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, sorted_logits)
    return logits


def draw(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of `logits` (N, V), drawn with probabilities softmax(logits),
    by inverse CDF (a uniform number against the cumulative sum). `logits` is
    overwritten. -inf logits are never drawn."""
    logits -= logits.max(1, keepdims=True)
    np.exp(logits, out=logits)
    cdf = np.cumsum(logits, 1)  # (N, V)
    u = (1.0 - rng.random(len(cdf))) * cdf[:, -1]  # in (0, total]
    return (cdf < u[:, None]).sum(1)  # the first index with cdf >= u


def next_token(
    scores: Any,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Generator | None = None,
) -> Any:
    """One step's choice: scores (N, V) -> ids (N,).

    T = 0 takes the argmax; otherwise one draw from softmax(filter(scores / T)), with
    :func:`apply_temperature` and :func:`filter_logits`. With a NumPy `generator` the
    draw is :func:`draw` (inverse CDF, on the CPU: a third of ``torch.multinomial``'s
    time) and NumPy scores give NumPy ids; with a ``torch.Generator`` or None it is
    ``torch.multinomial`` (None: torch's global RNG).
    """
    if temperature == 0:
        return argmax(scores)
    scores = apply_temperature(scores, temperature)
    if top_k is not None or top_p is not None:
        numpy_in = isinstance(scores, np.ndarray)
        scores = filter_logits(torch.as_tensor(scores), top_k, top_p)
        scores = scores.numpy() if numpy_in else scores
    if isinstance(generator, np.random.Generator):
        if isinstance(scores, np.ndarray):
            return draw(np.array(scores, dtype=np.float32), generator)  # a copy: draw writes
        return torch.from_numpy(draw(scores.float().cpu().numpy().copy(), generator))
    probs = torch.as_tensor(scores).float().softmax(-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> Generator | None:
    """The random numbers of :func:`next_token`'s draws; a seed fixes the text.

    On the CPU a NumPy generator (for :func:`draw`), seeded from `seed`, or from
    torch's global RNG when `seed` is None (so ``torch.manual_seed`` still governs an
    unseeded run). Elsewhere a ``torch.Generator`` seeded with `seed`, or None (torch's
    global RNG).
    """
    device = torch.device(device)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    if device.type != "cpu":
        return gen
    return np.random.default_rng(torch.randint(0, 2**62, (1,), generator=gen).item())


def check_sampling(
    *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> None:
    """ValueError naming the argument and its value for a bad temperature, top_k, top_p."""
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not temperature >= 0
        or math.isinf(temperature)
    ):
        raise ValueError(
            f"Argument `temperature` must be a finite number >= 0 (0: greedy), got {temperature!r}"
        )
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"Argument `top_k` must be a positive integer, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"Argument `top_p` must lie in (0, 1], got {top_p!r}")


def check_count(name: str, value: Any, minimum: int) -> None:
    """ValueError naming `name` and `value` unless `value` is an integer >= `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"Argument `{name}` must be {want}, got {value!r}")


# -- greedy and sampled sequences ----------------------------------------------------------


class Sequences(NamedTuple):
    """Generated tokens: ``tokens`` (N, T) and ``lengths`` (N,).

    A stream's length counts its tokens up to and including its first end id (T when
    it has none); the positions after it hold that end id.
    """

    tokens: Tensor
    lengths: Tensor


def greedy(
    step: Step,
    ids: Any,
    state: State,
    max_length: int,
    *,
    end: int | Collection[int] | None = None,
) -> Sequences:
    """The most likely token at every step (:func:`sample` at temperature 0)."""
    return sample(step, ids, state, max_length, temperature=0.0, end=end)


def sample(
    step: Step,
    ids: Any,
    state: State,
    max_length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    end: int | Collection[int] | None = None,
    seed: int | None = None,
    generator: Generator | None = None,
) -> Sequences:
    """Sampled sequences of N streams at once, stopping at `end` or `max_length`.

    Args:
        step, ids, state, end: as for :func:`decode`.
        temperature: scores are divided by it before the softmax; 0 is greedy.
        top_k: draw among the k most likely tokens only.
        top_p: draw from the smallest set of most likely tokens holding probability p.
        seed: seeds a private generator (:func:`make_generator`): the same seed gives
            the same sequences. None draws from the global RNG.
        generator: a torch or NumPy generator to draw from instead of `seed`.
    """
    check_count("max_length", max_length, 0)
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if seed is not None and generator is not None:
        raise ValueError("give at most one of `seed` and `generator`")
    if generator is None and temperature != 0:
        device = ids.device if isinstance(ids, Tensor) else "cpu"
        generator = make_generator(seed, device)

    def pick(scores: Any) -> Any:
        return next_token(
            scores, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )

    steps = [torch.as_tensor(i) for i in decode(step, ids, state, max_length, pick, end=end)]
    N = len(ids)
    if not steps:
        return Sequences(torch.zeros(N, 0, dtype=torch.long), torch.zeros(N, dtype=torch.long))
    tokens = torch.stack(steps, 1).long()  # (N, T)
    T = tokens.shape[1]
    ends = _end_ids(end)
    if ends is None:
        return Sequences(tokens, torch.full((N,), T, dtype=torch.long))
    hit = torch.isin(tokens, ends.to(tokens.device))  # (N, T)
    first = torch.where(hit.any(1), hit.int().argmax(1), T - 1)  # (N,)
    lengths = torch.where(hit.any(1), first + 1, torch.full_like(first, T))
    after = torch.arange(T, device=tokens.device) > first[:, None]  # (N, T)
    fill = tokens.gather(1, first[:, None]).expand(-1, T)
    tokens = torch.where(after & hit.any(1, keepdim=True), fill, tokens)
    return Sequences(tokens, lengths)


def ensemble(steps: Collection[Step]) -> Step:
    """Several models decoding as one: a step function whose scores (N, V) are the log of
    the mean of the models' next-token probabilities, and whose state is the tuple of
    their states (None before the first step: each model gets None).

    The models must share one vocabulary; each reads the same previous ids. Averaging
    probabilities (a mixture, as fairseq's ensembles do) rather than log-probabilities
    (a product, OpenNMT's) lets no one model veto a token the others are sure of. The
    scores are normalised log-probabilities, so temperature, top-k/p and beam search act
    on the mixture as on one model's logits; :func:`select_state` follows the tuple.
    """
    steps = list(steps)
    if not steps or not all(callable(s) for s in steps):
        raise ValueError(f"Argument `steps` must be one or more step functions, got {steps!r}")
    log_m = math.log(len(steps))

    def step(ids: Any, state: State) -> tuple[Tensor, State]:
        states = (None,) * len(steps) if state is None else state
        outs = [f(ids, s) for f, s in zip(steps, states, strict=True)]
        log_probs = []
        for scores, _ in outs:
            scores = torch.as_tensor(scores)  # (N, V)
            dtype = torch.promote_types(scores.dtype, torch.float32)
            log_probs.append(scores.log_softmax(-1, dtype=dtype))
        mixed = torch.stack(log_probs).logsumexp(0) - log_m  # (N, V)
        return mixed, tuple(new for _, new in outs)

    return step


# -- beam search ---------------------------------------------------------------------------


class Hypothesis(NamedTuple):
    """One of beam search's results.

    ``tokens``: the generated ids, the end id not included. ``log_prob``: log P of
    the tokens and, when ``finished``, of the end (any of the end ids). ``score``:
    ``log_prob / length_penalty(len(tokens) + finished, alpha)``, what ranks them.
    """

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016): 1 for alpha = 0.

    Beam search ranks by log P(Y) / lp(Y); alpha > 0 favours longer outputs, whose
    log-probability is a sum of more negative terms.
    """
    return ((5.0 + length) / 6.0) ** alpha


def select_state(state: State, index: Tensor) -> State:
    """The rows `index` of every tensor in `state` (a tensor, array, nested tuple,
    NamedTuple or list of them, or None): how beam search follows each surviving beam."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        parts = [select_state(s, index) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)
    if isinstance(state, np.ndarray):
        return state[index.cpu().numpy()]
    return state[index.to(state.device)]


def batch_first_state(state: Any) -> Any:
    """A recurrent stack's state (L, B, H), or a tuple of them, -> (B, L, H) each: rows
    are streams, as :func:`select_state` and beam search want them."""
    if isinstance(state, tuple):
        return tuple(s.transpose(0, 1) for s in state)
    return state.transpose(0, 1)


def layer_first_state(state: Any) -> Any:
    """The inverse of :func:`batch_first_state`: (B, L, H) each -> (L, B, H), contiguous."""
    if isinstance(state, tuple):
        return tuple(s.transpose(0, 1).contiguous() for s in state)
    return state.transpose(0, 1).contiguous()


def beam_search(
    step: Step,
    ids: Tensor,
    state: State,
    max_length: int,
    *,
    k: int = 5,
    end: int | Collection[int] | None = None,
    alpha: float = 0.0,
    beam_size: int | None = None,
    keep_unfinished: bool = True,
    every_end: bool = False,
) -> list[list[Hypothesis]]:
    """The k most likely continuations of each of N streams, by beam search.

    At every step each of the `beam_size` most likely prefixes is extended by every
    token; the `beam_size` most likely extensions by other than an end id go on. An
    extension by an end id finishes a hypothesis (its log-probability includes the
    end's: log of the summed probability of the end ids) if it is at least as likely
    as the least likely prefix that goes on, as when ends compete for the beam's
    places (OpenNMT, fairseq): a beam of 1 is then greedy decoding. The search stops
    after `max_length` tokens (end included), or once no live prefix can beat the
    k-th finished hypothesis. A beam as wide as the number of possible prefixes
    searches exhaustively.

    Args:
        step, ids, state, end: as for :func:`decode`; `state`'s tensors batch-first.
        k: hypotheses returned per stream, best first.
        alpha: the length penalty's exponent (:func:`length_penalty`); 0 ranks by the
            plain log-probability.
        beam_size: prefixes kept per stream; default `k`.
        keep_unfinished: count the prefixes still live after `max_length` tokens as
            (unfinished) hypotheses; False returns finished ones only (possibly
            fewer than k).
        every_end: finish every live prefix's end extension, however unlikely
            (:func:`complete` lists the likeliest stops this way).

    Returns:
        For each stream a list of at most k :class:`Hypothesis`, best score first.
    """
    check_count("max_length", max_length, 1)
    check_count("k", k, 1)
    beam = k if beam_size is None else beam_size
    check_count("beam_size", beam, 1)
    if not isinstance(alpha, (int, float)) or not 0 <= alpha < math.inf:
        raise ValueError(f"Argument `alpha` must be a finite number >= 0, got {alpha!r}")
    ids = torch.as_tensor(ids)
    N, device = len(ids), ids.device
    ends = _end_ids(end)
    ends = None if ends is None else ends.to(device)
    rows = torch.arange(N, device=device).repeat_interleave(beam)  # (N*B,): the beams' streams
    ids, state = ids[rows], select_state(state, rows)
    log_p = torch.full((N, beam), -math.inf, device=device)  # (N, B)
    log_p[:, 0] = 0.0  # one live prefix, the empty one, to start
    prefixes = torch.zeros(N * beam, 0, dtype=torch.long, device=device)  # (N*B, t)
    found: list[list[Hypothesis]] = [[] for _ in range(N)]
    done = [False] * N
    worst_bound = length_penalty(max_length, alpha)  # no hypothesis gets a larger one
    for t in range(1, max_length + 1):
        scores, state = step(ids, state)  # (N*B, V)
        scores = torch.as_tensor(scores)
        log_probs = scores.log_softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        cand = log_p.to(log_probs.dtype).view(-1, 1) + log_probs  # (N*B, V)
        V = cand.shape[1]
        ending = None
        if ends is not None:
            ending = cand[:, ends].logsumexp(-1).view(N, beam)  # (N, B): finish here
            cand[:, ends] = -math.inf
        top, flat = cand.view(N, beam * V).topk(beam, -1)  # (N, B) live prefixes
        if ending is not None:
            if not every_end:  # only ends that win a place against the live prefixes
                ending = ending.masked_fill(ending < top[:, -1:], -math.inf)
            _record(found, done, ending, prefixes, t, alpha, k, finished=True)
        src = (torch.arange(N, device=device)[:, None] * beam + flat // V).view(-1)  # (N*B,)
        ids = (flat % V).view(-1)
        prefixes = torch.cat([prefixes[src], ids[:, None]], 1)
        state, log_p = select_state(state, src), top
        if t == max_length:
            if keep_unfinished:
                _record(found, done, log_p, prefixes, t, alpha, k, finished=False)
            break
        for n in range(N):  # no live prefix can reach the k-th hypothesis: stream n is done
            best_possible = float(log_p[n, 0]) / worst_bound  # log P only falls
            if len(found[n]) >= k and best_possible <= found[n][-1].score:
                done[n] = True
            if not math.isfinite(best_possible):
                done[n] = True
        if all(done):
            break
    return found


def _record(found, done, log_p, prefixes, t, alpha, k, *, finished: bool) -> None:
    """Add the finite entries of log_p (N, B) as hypotheses of length t; keep the k best."""
    N, beam = log_p.shape
    lp = length_penalty(t, alpha)  # t tokens, the end included
    for n, b in torch.isfinite(log_p).nonzero().tolist():
        if done[n]:
            continue
        tokens = prefixes[n * beam + b].tolist()
        value = float(log_p[n, b])
        found[n].append(Hypothesis(tokens, value, value / lp, finished))
    for n in range(N):
        found[n].sort(key=lambda h: -h.score)  # stable: earlier (shorter) first on ties
        del found[n][k:]


def complete(
    step: Step,
    ids: Tensor,
    state: State,
    stops: int | Collection[int],
    *,
    k: int = 5,
    max_length: int = 20,
    beam_size: int | None = None,
) -> list[list[Hypothesis]]:
    """The lecture's spelling completion: the k most likely ways to go on to a stop.

    A continuation is finished when the model emits a stop token (for characters:
    a space or a newline); its probability is that of its tokens times that of
    stopping after them (any stop). Continuations of more than `max_length` tokens
    before the stop are not searched. It is :func:`beam_search` with ``end=stops``,
    plain log-probabilities (alpha 0) and finished hypotheses only; a beam wider than
    `k` (`beam_size`) finds unlikely prefixes with likely endings more often.

    Returns:
        For each of the N streams at most k :class:`Hypothesis` (tokens without the
        stop), most likely first; ``exp(log_prob)`` is the probability.
    """
    check_count("max_length", max_length, 0)
    return beam_search(
        step,
        ids,
        state,
        max_length + 1,
        k=k,
        end=stops,
        alpha=0.0,
        beam_size=beam_size,
        keep_unfinished=False,
        every_end=True,
    )


@torch.inference_mode()
def log_prob(
    step: Step,
    ids: Tensor,
    state: State,
    sequences: Sequence[Sequence[int]],
    *,
    end: int | None = None,
) -> Tensor:
    """How likely the model finds given sequences: log P of each one's tokens (and of
    `end` after them, when given), stream by stream: the loop fed the sequence's own
    tokens instead of its choices (teacher forcing). What rescoring candidates needs
    (an n-best list, or sentences from elsewhere), and the gold score of OpenNMT and
    fairseq's ``--score-reference``.

    Args:
        step, ids, state: as for :func:`decode`: N streams (`state` batch-first).
        sequences: N token lists, one per stream (each may be empty).
        end: a token id that closes every sequence (its log-probability is added).

    Returns:
        log P of each sequence, (N,), float. A sequence of the tokens of a beam search
        :class:`Hypothesis` (with the same `end` when it finished) gets its ``log_prob``.
    """
    ids = torch.as_tensor(ids)
    if len(sequences) != len(ids):
        raise ValueError(
            f"Argument `sequences`: one per stream, got {len(sequences)} for {len(ids)} streams"
        )
    closing = [] if end is None else [int(_end_ids(end)[0])]
    rows = [list(s) + closing for s in sequences]
    T = max((len(r) for r in rows), default=0)
    device = ids.device
    targets = torch.zeros(len(rows), T, dtype=torch.long, device=device)  # (N, T)
    live = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
    for n, r in enumerate(rows):
        targets[n, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        live[n, : len(r)] = True
    total = torch.zeros(len(rows), dtype=torch.float64, device=device)
    for t in range(T):
        scores, state = step(ids, state)
        scores = torch.as_tensor(scores)
        log_probs = scores.log_softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        picked = log_probs.gather(1, targets[:, t : t + 1].to(log_probs.device))[:, 0]
        total += torch.where(live[:, t].to(picked.device), picked, 0.0).to(total)
        ids = targets[:, t].to(ids.dtype)
    return total


def minimum_bayes_risk(
    candidates: Sequence[Any],
    log_probs: Sequence[float] | None,
    utility: Callable[[Any, Any], float],
) -> int:
    """Minimum Bayes risk selection (Kumar and Byrne 2004): of one stream's candidate
    sequences (a beam search's n-best list, or samples), the one that agrees most with
    the others, weighted by how likely the model finds them::

        best = argmax_i  sum_j  p_j * utility(c_i, c_j)
        p_j  = softmax(log_probs)_j   (equal weights when log_probs is None)

    The mode of the model's distribution (what beam search looks for) need not score
    best on a metric; the candidate with the highest expected metric against the
    model's own alternatives often does (captions: CIDEr; translation: BLEU).
    Candidates that are equal count once, their probabilities summed. Samples drawn
    from the model are already weighted by being drawn: pass None.

    Args:
        candidates: one stream's sequences (anything `utility` reads), at least one.
        log_probs: log P of each candidate, or None.
        utility: utility(hypothesis, reference) -> float, higher is better.

    Returns:
        The index in `candidates` of the chosen one (the first of equals).
    """
    if not len(candidates):
        raise ValueError("Argument `candidates`: give at least one sequence")
    if log_probs is not None and len(log_probs) != len(candidates):
        raise ValueError(
            f"Argument `log_probs`: one per candidate, got {len(log_probs)} for "
            f"{len(candidates)} candidates"
        )
    lp = np.zeros(len(candidates)) if log_probs is None else np.asarray(log_probs, float)
    if not np.all(np.isfinite(lp) | (lp == -np.inf)) or np.all(lp == -np.inf):
        raise ValueError(f"Argument `log_probs` must be finite log-probabilities, got {lp!r}")
    p = np.exp(lp - lp.max())
    first: dict[Any, int] = {}  # each distinct candidate: its first index
    mass: dict[Any, float] = {}  # ... and its summed probability
    for i, (c, pi) in enumerate(zip(candidates, p)):
        key = tuple(np.asarray(c).tolist()) if isinstance(c, (list, np.ndarray, Tensor)) else c
        first.setdefault(key, i)
        mass[key] = mass.get(key, 0.0) + pi
    if len(first) == 1:
        return 0
    total = sum(mass.values())
    weighted = [(first[k], m / total) for k, m in mass.items() if m > 0]
    gain = {i: sum(w * utility(candidates[i], candidates[j]) for j, w in weighted)
            for i in first.values()}  # fmt: skip
    return max(gain, key=gain.get)  # the first of equals


def _end_ids(end: int | Collection[int] | None) -> Tensor | None:
    if end is None:
        return None
    values = [end] if isinstance(end, (int, np.integer)) else list(end)
    if not values or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in values):
        raise ValueError(f"Argument `end` must be a token id or a set of them, got {end!r}")
    return torch.tensor(sorted(set(int(v) for v in values)), dtype=torch.long)


__all__ = [
    "Hypothesis",
    "Sequences",
    "apply_temperature",
    "argmax",
    "beam_search",
    "check_count",
    "check_sampling",
    "complete",
    "decode",
    "draw",
    "ensemble",
    "filter_logits",
    "greedy",
    "length_penalty",
    "log_prob",
    "make_generator",
    "minimum_bayes_risk",
    "next_token",
    "sample",
    "select_state",
]
