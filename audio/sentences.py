"""Cut streamed text into sentences, incrementally, so speech can start early.

`SentenceSplitter.push(text)` takes the next piece of text (e.g. an LLM token) and
returns the sentences it completed; `finish()` returns the rest. Offsets are
character indexes into the whole text received so far.

Rules:
- a sentence ends at `.`, `!`, `?`, `…` (runs like `?!` or `...` count as one),
  plus any closing quotes or brackets, followed by whitespace; CJK full stops end
  one without the whitespace; a blank line ends one too;
- a `.` does not end a sentence after a known abbreviation (`Dr.`, `e.g.`,
  `etc.`), after a single-letter initial (`J. Smith`) or a dotted acronym
  (`U.S.`), nor inside a number (`3.14`) or a URL/file name (`example.com/a.b`),
  because nothing but whitespace may follow the terminator;
- a run without any of these is cut once it passes `max_chars`: at the last
  clause mark (`,;:` or a dash) in its second half, else at the last space, else
  hard at `max_chars`;
- a sentence with no letter or digit (e.g. a lone `...`) is not spoken: dropped.

At the end of a pushed piece (an LLM chunk), a terminator that ends the piece
cannot be followed by whitespace yet. Waiting for the next piece would hold every
sentence back by one chunk interval (30-100 ms of an LLM's stream, before the first
audio), so with `at_chunk_end` (the default) the sentence is emitted at once unless
what follows could still change it:
- `!`, `?`, `…`, a CJK terminator, or `...` (three dots or more), with any closers:
  emitted;
- a single `.` (with any closers): emitted unless it may be an abbreviation,
  initial or dotted acronym (the rule above: `Dr.`, `J.`, `e.g.`) or follows a
  digit (`3.` may become `3.14`); those wait for the next piece as before;
- `..`: waits (an ellipsis may be growing).
What arrives after such a cut and cannot start a sentence (more terminators, e.g.
the `!` of a `?!` split across pieces) is dropped from the next sentence's text;
a closing quote or bracket that arrives in the next piece starts the next sentence
(both are silent in speech). So sentence boundaries may depend on where the
pieces were cut, never the words spoken.

`split_sentences(max_chars)` is the same as an Rx operator over `TextPiece`s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from reactivex import Observable, abc

DEFAULT_MAX_CHARS = 250

ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "gen",
        "col", "capt", "lt", "sgt", "gov", "sen", "pres", "hon", "messrs", "vs",
        "etc", "approx", "appt", "dept", "figs", "inc", "ltd", "corp", "vol", "vols",
        "pp", "ch", "ave", "blvd", "rd", "apt", "jan", "feb", "apr", "jun", "jul",
        "aug", "sep", "sept", "oct", "nov", "tue", "tues", "thu", "thur", "thurs",
        "fri", "cf", "al", "ibid", "ph.d", "viz", "hrs",
    }
)  # fmt: skip
"""Words after which a `.` does not end a sentence (lower case, without the final dot).

Words that often end a sentence for real ("no", "sat", "min") are left out.
"""

_TERMINATORS = ".!?…"
_CJK_TERMINATORS = "\u3002\uff01\uff1f"  # ideographic full stop, fullwidth ! and ?
_CLOSERS = "\"'\u201d\u2019)]}\u00bb"  # quotes (straight and curly), brackets
_CLAUSE_MARKS = ",;:\u2014\u2013"  # comma, semicolon, colon, em and en dash
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_TOKEN_BEFORE = re.compile(r"\S*$")
_WORD = re.compile(r"[^\W\d_]+(?:\.[^\W\d_]+)*")  # letters, maybe dotted: "Dr", "e.g", "Ph.D"


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence: `text` is the stripped span `[start_char, end_char)` of the input."""

    index: int
    text: str
    start_char: int
    end_char: int


@dataclass(frozen=True, slots=True)
class TextPiece:
    """A piece of streamed input text; `final` says the input ends with it."""

    text: str
    final: bool = False


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class SentenceSplitter:
    """Incremental sentence splitter (see the module docstring for the rules).

    push("Hello Dr. Smith. How") -> [Sentence(0, "Hello Dr. Smith.", 0, 16)]
    push(" are you?")            -> [Sentence(1, "How are you?", 17, 29)]  (at the piece's end)
    push(" See Dr.")             -> []          (an abbreviation: wait for more)
    finish()                     -> [Sentence(2, "See Dr.", 30, 37)]
    With `at_chunk_end=False` a terminator always waits for the next character.
    """

    def __init__(
        self,
        max_chars: int = DEFAULT_MAX_CHARS,
        abbreviations: frozenset[str] = ABBREVIATIONS,
        *,
        at_chunk_end: bool = True,
    ) -> None:
        if max_chars < 2:
            raise ValueError("max_chars must be at least 2")
        self.max_chars = max_chars
        self.at_chunk_end = at_chunk_end
        self._abbreviations = abbreviations
        self._after_eager = False  # the last cut was at a piece's end
        self._buffer = ""
        self._offset = 0  # absolute index of _buffer[0]
        self._scan = 0  # _buffer positions before this hold no boundary
        self._count = 0

    @property
    def pending(self) -> str:
        """Text received but not yet part of a sentence."""
        return self._buffer

    def push(self, text: str) -> list[Sentence]:
        """Append `text`; return the sentences it completed (possibly none)."""
        if self._after_eager:
            text = self._skip_continuation(text)
        self._buffer += text
        out: list[Sentence] = []
        while True:
            cut = self._find_boundary()
            if cut is None or len(self._buffer[:cut].strip()) > self.max_chars:
                cut = self._forced_cut() or cut
            if cut is None:
                break
            self._emit(cut, out)
        if text and self.at_chunk_end and self._ends_at_chunk_end():
            self._emit(len(self._buffer), out)
            self._after_eager = True
        return out

    def _skip_continuation(self, text: str) -> str:
        """After a cut at a piece's end: drop the terminators that continue it."""
        kept = text.lstrip(_TERMINATORS + _CJK_TERMINATORS)
        if kept:
            self._after_eager = False
        self._offset += len(text) - len(kept)
        return kept

    def _ends_at_chunk_end(self) -> bool:
        """Whether the buffer ends in a sentence end that no next piece can undo."""
        buf = self._buffer
        body = buf.rstrip(_CLOSERS)
        run = len(body) - len(body.rstrip(_TERMINATORS + _CJK_TERMINATORS))
        if run == 0 or not _speakable(body):
            return False
        tail = body[-run:]
        if tail.strip(".") or run >= 3:
            return True  # "!", "?", "…", CJK, or a whole "..."
        if run == 2:
            return False  # ".." may be an ellipsis still growing
        dot = len(body) - 1
        if dot > 0 and body[dot - 1].isdigit():
            return False  # "3." may become "3.14"
        return not self._is_abbreviation(buf + " ", dot, len(buf))

    def finish(self) -> list[Sentence]:
        """The input ended: return whatever is left, as sentences."""
        out = self.push("")
        while len(self._buffer.strip()) > self.max_chars:
            cut = self._forced_cut()
            assert cut is not None
            self._emit(cut, out)
        self._emit(len(self._buffer), out)
        return out

    def _emit(self, cut: int, out: list[Sentence]) -> None:
        piece = self._buffer[:cut]
        stripped = piece.strip()
        if stripped and _speakable(stripped):
            start = self._offset + (len(piece) - len(piece.lstrip()))
            out.append(Sentence(self._count, stripped, start, start + len(stripped)))
            self._count += 1
        self._buffer = self._buffer[cut:]
        self._offset += cut
        self._scan = 0

    def _find_boundary(self) -> int | None:
        """The index just past the first sentence end in the buffer, or None."""
        buf = self._buffer
        i = self._scan
        n = len(buf)
        while i < n:
            ch = buf[i]
            if ch in _CJK_TERMINATORS:
                end = i + 1
                while end < n and (buf[end] in _CJK_TERMINATORS or buf[end] in _CLOSERS):
                    end += 1
                if end == n:
                    self._scan = i
                    return None  # a closer may still follow
                return end
            if ch == "\n":
                j = i + 1
                while j < n and buf[j] in " \t\r":
                    j += 1
                if j < n and buf[j] == "\n" and buf[:i].strip():
                    return i
                if j == n:
                    self._scan = i
                    return None
            if ch in _TERMINATORS:
                end = i + 1
                while end < n and buf[end] in _TERMINATORS:
                    end += 1
                while end < n and buf[end] in _CLOSERS:
                    end += 1
                if end == n:
                    self._scan = i
                    return None  # undecided until the next character arrives
                if buf[end].isspace() and not self._is_abbreviation(buf, i, end):
                    return end
                i = end
                continue
            i += 1
        self._scan = n
        return None

    def _is_abbreviation(self, buf: str, dot: int, end: int) -> bool:
        if buf[dot] != "." or buf[dot + 1 : end].strip(_CLOSERS):
            return False  # only a single "." (without "?!" or "...") may be an abbreviation
        match = _TOKEN_BEFORE.search(buf, 0, dot)
        word = (match.group(0) if match else "").lstrip("'\u2019-(\"")
        if not word or not _WORD.fullmatch(word):
            return False  # a URL, a path, a number: its final "." ends the sentence
        if len(word) == 1 and word.isalpha():
            return True  # an initial: "J. Smith"
        if _DOTTED_ACRONYM.fullmatch(word):
            return True  # "e.g", "U.S", "a.m"
        return word.lower() in self._abbreviations

    def _forced_cut(self) -> int | None:
        """A cut for a run that passed `max_chars` without a sentence end, or None."""
        buf = self._buffer
        lead = len(buf) - len(buf.lstrip())
        if len(buf) - lead <= self.max_chars:
            return None
        limit = lead + self.max_chars
        window = buf[:limit]
        half = lead + self.max_chars // 2
        for i in range(limit - 1, half - 1, -1):
            if window[i] in _CLAUSE_MARKS and (i + 1 >= len(buf) or buf[i + 1].isspace()):
                return i + 1
        space = max(window.rfind(ws, lead + 1) for ws in " \n\t")
        if space > lead:
            return space
        return limit


def split_sentences(
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Callable[[Observable[TextPiece]], Observable[Sentence]]:
    """Text pieces in, sentences out, each as soon as it is complete.

    pieces:    -"Hi. Th"-"ere is more."-("!",final)|
    sentences: ---"Hi."------------------"There is more.!"|
    The output completes after the final piece (the rest is flushed then); a
    source that completes without a final piece also flushes. Errors pass through.
    """

    def operator(source: Observable[TextPiece]) -> Observable[Sentence]:
        def subscribe(
            observer: abc.ObserverBase[Sentence], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            splitter = SentenceSplitter(max_chars)
            state = {"done": False}

            def flush() -> None:
                state["done"] = True
                for sentence in splitter.finish():
                    observer.on_next(sentence)
                observer.on_completed()

            def on_next(piece: TextPiece) -> None:
                if state["done"]:
                    return
                for sentence in splitter.push(piece.text):
                    observer.on_next(sentence)
                if piece.final:
                    flush()

            def on_error(error: Exception) -> None:
                if not state["done"]:
                    state["done"] = True
                    observer.on_error(error)

            def on_completed() -> None:
                if not state["done"]:
                    flush()

            return source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
