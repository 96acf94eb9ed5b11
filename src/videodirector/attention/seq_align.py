"""Token bookkeeping for prompt-to-prompt: word indices, global alignment, refine/replace mappers.

Pure functions; the tokenizer is an argument (any ``CLIPTokenizer``-like object with
``encode`` and ``decode``). Token positions include the BOS token at index 0, as the
text encoder sees them.
"""

from __future__ import annotations

import string

import torch
from torch import Tensor

from ..errors import UserError

MAX_TOKENS = 77
_PUNCT = string.punctuation


def _norm(word: str) -> str:
    return word.strip(_PUNCT).lower()


def word_token_indices(prompt: str, word: str, tokenizer, limit: int | None = MAX_TOKENS) -> list[int]:  # noqa: ANN001
    """Token positions (BOS = 0) of every occurrence of ``word`` in ``prompt``, below ``limit``
    (the text encoder's 77 positions; None: every occurrence).

    Words are whitespace-separated and compared without surrounding punctuation and case
    (the official code compares raw ``split(" ")`` words, so "tiger" misses "tiger,").
    """
    ids = tokenizer.encode(prompt)[1:-1]
    pieces = [tokenizer.decode([i]).strip().lower() for i in ids]
    target = _norm(word)
    out: list[int] = []
    pos = 0
    for w in prompt.split():
        wl = w.lower()
        acc, start = "", pos
        while pos < len(pieces) and len(acc) < len(wl.replace(" ", "")):
            acc += pieces[pos]
            pos += 1
        if _norm(w) == target:
            # the word's tokens without the punctuation attached around it ("tiger," -> "tiger"); punctuation
            # inside it stays, as in the official get_word_inds ("spider-man" -> "spider", "-", "man")
            span = list(range(start, pos))
            while span and not pieces[span[0]].strip(_PUNCT):
                span.pop(0)
            while span and not pieces[span[-1]].strip(_PUNCT):
                span.pop()
            out.extend(i + 1 for i in span)
    return [i for i in out if limit is None or i < limit]


def require_words(prompt: str, words: list[str], tokenizer, what: str) -> None:  # noqa: ANN001
    """Raise a one-line :class:`UserError` when a configured word is not in the prompt."""
    for w in words:
        if word_token_indices(prompt, w, tokenizer):
            continue
        beyond = word_token_indices(prompt, w, tokenizer, limit=None)
        if beyond:
            raise UserError(f"{what} word {w!r} is at token {beyond[0]} of the prompt, past the text encoder's "
                            f"{MAX_TOKENS}-token limit, so the model never sees it; shorten the prompt")
        raise UserError(f"{what} word {w!r} does not appear in the prompt {prompt!r}; "
                        f"use a word of that prompt or remove it")


def unknown_words(prompt: str, tokenizer) -> list[str]:  # noqa: ANN001
    """Words of ``prompt`` that ``tokenizer`` does not have as whole tokens (closed-vocabulary tokenizers,
    such as the bundled ShapeWorld one, spell them letter by letter; the model never learnt them)."""
    vocab = tokenizer.get_vocab()
    out: list[str] = []
    for w in prompt.split():
        n = _norm(w)
        if n and f"{n}</w>" not in vocab and n not in out:
            out.append(n)
    return out


def global_align(x: list[int], y: list[int], gap: int = 0, match: int = 1, mismatch: int = -1) -> list[int]:
    """Needleman-Wunsch alignment of token sequences; returns, for each index of ``y``, its aligned
    index in ``x`` or -1 (prompt-to-prompt's ``ScoreParams(gap=0, match=1, mismatch=-1)``).

    Where moves tie, the traceback prefers what the official aligner (prompt-to-prompt's
    ``seq_aligner.global_align``, copied by the official code) prefers: its ``left`` (``score[i][j-1]``: a
    gap in ``x``, the target token is new; here trace 2), then its ``up`` (``score[i-1][j]``: a gap in ``y``,
    the source token is dropped; trace 1), then the diagonal (trace 0). With several optimal alignments
    (e.g. a repeated or swapped word) this picks the same one, hence the same refine mapper. A diagonal move
    maps only equal tokens; it is never taken on a mismatch when ``mismatch <= 2 gap`` (as by default).
    """
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    trace = [[0] * (m + 1) for _ in range(n + 1)]  # 0 diag, 1 up (gap in y), 2 left (gap in x)
    for i in range(1, n + 1):
        score[i][0] = i * gap
        trace[i][0] = 1
    for j in range(1, m + 1):
        score[0][j] = j * gap
        trace[0][j] = 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1][j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            up = score[i - 1][j] + gap
            left = score[i][j - 1] + gap
            best = max(diag, up, left)
            score[i][j] = best
            trace[i][j] = 2 if best == left else 1 if best == up else 0
    mapping = [-1] * m
    i, j = n, m
    while i > 0 or j > 0:
        t = trace[i][j]
        if i > 0 and j > 0 and t == 0:
            if x[i - 1] == y[j - 1]:
                mapping[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif i > 0 and (j == 0 or t == 1):
            i -= 1
        else:
            j -= 1
    return mapping


def refinement_mapper(source: str, target: str, tokenizer, max_len: int = MAX_TOKENS) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """Prompt-to-prompt refine mapper.

    Returns ``(mapper, alphas)``, each ``(max_len,)``: target token j reads the source map at
    ``mapper[j]`` when ``alphas[j] == 1`` (aligned); new tokens have ``alphas[j] = 0``. Positions
    past the target prompt map to themselves with alpha 1.
    """
    x, y = tokenizer.encode(source), tokenizer.encode(target)
    if len(x) > max_len or len(y) > max_len:
        raise UserError(f"prompt longer than {max_len} tokens; shorten it")
    aligned = global_align(x, y)
    mapper = torch.arange(max_len, dtype=torch.long)
    alphas = torch.ones(max_len)
    for j, i in enumerate(aligned):
        mapper[j] = max(i, 0)
        alphas[j] = 1.0 if i >= 0 else 0.0
    return mapper, alphas


def word_spans(prompt: str, tokenizer) -> list[list[int]]:  # noqa: ANN001
    """Token positions (BOS = 0) of each whitespace-separated word of ``prompt``, by position, every token of
    the word included (prompt-to-prompt's ``get_word_inds`` with a word index)."""
    ids = tokenizer.encode(prompt)[1:-1]
    pieces = [tokenizer.decode([i]).strip().lower() for i in ids]
    spans, pos = [], 0
    for w in prompt.split():
        acc, start = "", pos
        while pos < len(pieces) and len(acc) < len(w):
            acc += pieces[pos]
            pos += 1
        spans.append([i + 1 for i in range(start, pos)])
    return spans


def replacement_mapper(source: str, target: str, tokenizer, max_len: int = MAX_TOKENS) -> Tensor:  # noqa: ANN001
    """Prompt-to-prompt replace mapper: a ``(max_len, max_len)`` matrix ``M`` with ``A_e' = A_r @ M``.

    Words are mapped by position (word k of the source to word k of the target), so a repeated word ("a ...
    a") maps one-to-one, never to every occurrence of itself. Tokens of a word map pairwise when both words
    have as many tokens; otherwise each target token receives the source word's tokens, each weighted
    ``1 / n_target`` (prompt-to-prompt's ``get_replacement_mapper``). BOS maps to BOS and the EOS/padding
    positions after the prompts map with the prompts' token offset (prompt-to-prompt maps them on the
    diagonal, which misaligns them after a word of another token count). The prompts must have the same
    number of words.
    """
    ws, wt = source.split(), target.split()
    if len(ws) != len(wt):
        raise UserError(f"replace edits need prompts with the same number of words: source has {len(ws)}, "
                        f"target has {len(wt)}; use --cross-mode refine")
    mapper = torch.zeros(max_len, max_len)
    mapper[0, 0] = 1.0
    for si, ti in zip(word_spans(source, tokenizer), word_spans(target, tokenizer)):
        si, ti = [i for i in si if i < max_len], [i for i in ti if i < max_len]
        if not si or not ti:
            continue
        if len(si) == len(ti):
            mapper[si, ti] = 1.0  # pairwise
        else:
            for t in ti:
                mapper[si, t] = 1.0 / len(ti)
    n_s, n_t = len(tokenizer.encode(source)), len(tokenizer.encode(target))
    for t in range(n_t - 1, max_len):  # EOS and padding, with the prompts' offset
        mapper[min(t - n_t + n_s, max_len - 1), t] = 1.0
    return mapper


def equalizer(target: str, words: list[str], values: list[float], tokenizer, max_len: int = MAX_TOKENS) -> Tensor:  # noqa: ANN001
    """Per-token reweighting ``e`` (default 1) for the words of the target prompt (paper Eq. 7's ``C``)."""
    eq = torch.ones(max_len)
    for w, v in zip(words, values):
        idx = word_token_indices(target, w, tokenizer)
        if not idx:
            raise UserError(f"equalizer word {w!r} does not appear in the target prompt {target!r}; "
                            "name a word of the target prompt")
        eq[idx] = float(v)
    return eq
