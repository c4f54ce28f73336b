"""Subtitle cues: the timed pieces of text that SRT and VTT show, and the broadcast style rules they keep.

:func:`build_cues` cuts a transcript into cues after the Netflix Timed Text Style Guide; the numbers
are :class:`StyleRules`, whose defaults live in :mod:`klipnote.defaults`:

* A cue has at most ``max_lines`` lines (2). A line of Latin-script text holds at most
  ``max_line_width_latin`` characters (42), one of Chinese, Japanese or Korean at most
  ``max_line_width_cjk`` (16), spaces and punctuation included. In a mixed line each CJK character
  (full-width punctuation included), and each space next to one, counts as ``latin / cjk`` (2.625)
  Latin characters: ``我们用 Python 写`` is as wide as 7 CJK and 6 Latin characters.
* A cue lasts at most ``max_cue_duration`` (7 s), and at least ``min_cue_duration`` (5/6 s) wherever
  the next cue leaves room for that; it stays shorter only when the speech is and the next cue (or
  the end of the speech) follows too closely.
* Cues never overlap and never run backwards: each starts ``min_gap`` (0) or more after the last ends.
* A cue never mixes segments or speakers.
* A two-line cue holds one sentence, or one sentence per line: a sentence never ends inside a line of
  a cue that has more than one (``"Yes. I think..."`` is fine on one line, not on two).
* Cues are cut, and lines broken, only between *units*: a Latin-script word (with the punctuation
  written against it), or one Chinese or Japanese character (with its punctuation). So a Latin word
  is never broken, no space is ever put between two CJK characters, and no line starts with a comma
  or a full stop. Korean is cut between words, like Latin text.

The one exception: a cue holding a single unit that alone is too wide or lasts too long (a 50-letter
word, a URL, a word held for 8 s, a run of a script written without spaces that is not CJK). That
unit is a cue of its own, on one line, and :func:`check_rules` accepts it.

Where the cuts go: sentence ends (``. ! ? 。 ！ ？``) first, then clause ends (``, ; : ， ； ： 、``,
dashes, ellipses, and a space the model wrote between CJK characters), then the longest pause between
words; among equally good cuts, the fewest and fullest cues. Lines break after punctuation where they
can, else where the lines come out most even, before a conjunction or preposition rather than after
an article (English only).

Text and timing: a cue's text is the segment's text (what TXT, TSV and the JSON ``text`` say), with
whitespace collapsed; the segment's words only time it. Each word's time is spread over its
characters, matched to the text's characters in order, so a word the engine left untimed still
appears, timed between its neighbours; a segment without timed words spreads its span evenly over its
characters (punctuation takes no time).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from functools import cache
from itertools import pairwise

from klipnote import cjk, defaults
from klipnote.transcript import Segment, Transcript


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str  # at most StyleRules.max_lines lines, joined by "\n"
    speaker: str | None = None

    @property
    def display_text(self) -> str:
        return f"[{self.speaker}] {self.text}" if self.speaker else self.text


@dataclass(frozen=True)
class StyleRules:
    """The numbers a cue keeps to; see the module's docstring for what each means."""

    max_line_width_latin: int = defaults.SUBTITLE_MAX_LINE_WIDTH_LATIN
    max_line_width_cjk: int = defaults.SUBTITLE_MAX_LINE_WIDTH_CJK
    max_lines: int = defaults.SUBTITLE_MAX_LINES
    max_cue_duration: float = defaults.SUBTITLE_MAX_CUE_DURATION
    min_cue_duration: float = defaults.SUBTITLE_MIN_CUE_DURATION
    min_gap: float = defaults.SUBTITLE_MIN_GAP

    def __post_init__(self) -> None:
        if min(self.max_line_width_latin, self.max_line_width_cjk, self.max_lines) < 1:
            raise ValueError("line widths and max_lines must be at least 1")
        if not 0.0 <= self.min_cue_duration <= self.max_cue_duration or self.max_cue_duration <= 0.0:
            raise ValueError("need 0 <= min_cue_duration <= max_cue_duration and max_cue_duration > 0")
        if self.min_gap < 0.0:
            raise ValueError("min_gap must not be negative")

    # Widths are whole numbers: a CJK character (or a space next to one) costs max_line_width_latin,
    # any other character max_line_width_cjk, and a line holds max_line_width_latin * max_line_width_cjk.

    @property
    def line_capacity(self) -> int:
        return self.max_line_width_latin * self.max_line_width_cjk

    def width(self, text: str) -> int:
        """How much of a line ``text`` takes, in the units of :attr:`line_capacity`."""
        return sum(self.space_width(text[k - 1] if k else "", text[k + 1:k + 2]) if c == " "
                   else self.max_line_width_latin if _wide(c) else self.max_line_width_cjk
                   for k, c in enumerate(text))

    def space_width(self, before: str, after: str) -> int:
        """A space counts as CJK next to a CJK character (Korean counts its spaces), else as Latin."""
        wide = any(_wide(c) for c in before + after)
        return self.max_line_width_latin if wide else self.max_line_width_cjk

    def line_fits(self, line: str) -> bool:
        return self.width(line) <= self.line_capacity


#: A cue can be cut or a line broken before any unit; how good a place it is depends on what ends
#: the unit before it.
_SENTENCE, _CLAUSE, _PLAIN = 0, 1, 2

_SENTENCE_END = frozenset(".!?。！？‼⁇⁈⁉")
_CLAUSE_END = frozenset(",;:，；：、…‥—–")
_CLOSING = frozenset("\"'”’)]}）》」』】〉〕〗〙〛»›")
_OPENING = frozenset("([{“‘（《「『【〈〔〖〘〚«‹")
#: Japanese characters that never start a line (kinsoku): small kana, the long vowel mark, iteration marks.
_NO_LINE_START = frozenset("ーぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ々ゝゞヽヾ・")
#: Characters that stay with the unit before them.
_ATTACH_LEFT = _SENTENCE_END | _CLAUSE_END | _CLOSING | _NO_LINE_START | frozenset("%‰")
#: Full stops that do not end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "e.g.", "i.e.",
                            "approx."})
#: English words a line or cue should not end on: they belong with what follows.
_WEAK_ENDINGS = frozenset({"a", "an", "the", "to", "of", "in", "on", "at", "for", "and", "or", "but", "with",
                           "by", "from", "as", "that", "my", "your", "his", "her", "its", "our", "their",
                           "this", "these", "those", "is", "are", "was", "were", "be", "i", "if", "not"})
#: English words that start a phrase: a line or cue is best broken before them.
_PHRASE_STARTS = frozenset({"and", "but", "or", "nor", "so", "as", "that", "which", "who", "whom", "whose", "where",
                            "when", "while", "because", "if", "unless", "although", "though", "than", "to", "of",
                            "in", "on", "at", "for", "with", "from", "by", "about", "before", "after", "into"})

# Costs of a way to cut a segment into cues: the cheapest wins. A cue costs 1, so a cut elsewhere
# than at punctuation costs as much as two more cues cut at sentence ends; a pause before it makes it
# cheaper (by up to 1, for a second's pause) but never as cheap as a cut at a clause end. Each cue
# also costs what its line breaks cost (below), so cues are cut where their lines break well.
_CUE = 1.0
_CUT = {_SENTENCE: 0.0, _CLAUSE: 0.5, _PLAIN: 3.0}
_PAUSE_BONUS_MAX = 1.0  # seconds of pause that count, one unit of cost per second
_WEAK_CUT = 0.5  # more for a cut after a word of _WEAK_ENDINGS
_PHRASE_CUT = 0.5  # less for a cut before a word of _PHRASE_STARTS
_EMPTY_CUE = 0.3  # times (1 - fill)²: among as many cues, prefer them evenly full
_SHORT_CUE = 0.5  # times the share of min_cue_duration a cue falls short by
# Costs of a way to break a cue into lines: the squared share of each line left empty (even lines
# are cheapest), plus where it breaks.
_BREAK = {_SENTENCE: 0.0, _CLAUSE: 0.05, _PLAIN: 0.3}
_WEAK_BREAK = 0.3
_PHRASE_BREAK = 0.15
_EXTRA_LINE = 0.5  # each line past two, when max_lines allows more
_EPS = 1e-6  # seconds: float slack when checking times


def build_cues(transcript: Transcript, rules: StyleRules = StyleRules()) -> list[Cue]:
    """The transcript's cues in time order, each keeping ``rules`` (see the module's docstring).

    Pure: the transcript is not changed. Every non-space character of every segment's text is in
    exactly one cue, in order within its segment.
    """
    cues: list[Cue] = []
    speech_end = 0.0
    for segment in transcript.segments:
        found = _segment_cues(segment, rules)
        if found:
            cues.extend(found)
            speech_end = max(speech_end, segment.end, *(c.end for c in found))
    cues = ordered(_make_gaps(ordered(cues), rules.min_gap), rules.min_gap)
    return ordered(_lengthen(cues, rules, speech_end), rules.min_gap)


def cues_per_segment(transcript: Transcript) -> list[Cue]:
    """One cue per segment on one line, the engine's own segmentation, no style rules: only ordered."""
    return ordered(Cue(s.start, s.end, " ".join(s.text.split()), s.speaker or None) for s in transcript.segments)


def ordered(cues: Iterable[Cue], min_gap: float = 0.0) -> list[Cue]:
    """Drop empty cues, sort by start, and clip each to start ``min_gap`` after the last ended (or later)."""
    result: list[Cue] = []
    for cue in sorted((c for c in cues if c.text.strip()), key=lambda c: (c.start, c.end)):
        start = max(cue.start, result[-1].end + min_gap if result else 0.0, 0.0)
        end = max(cue.end, start)
        result.append(Cue(start, end, cue.text, cue.speaker))
    return result


def check_rules(cues: Sequence[Cue], rules: StyleRules = StyleRules()) -> list[str]:
    """Every way ``cues`` (in the order given) break ``rules``, one sentence each; empty when none.

    A cue holding a single unit (see the module's docstring) may be too wide or too long. The last
    cue may be shorter than ``min_cue_duration``: when the speech ends is not known here.
    """
    problems: list[str] = []
    for n, cue in enumerate(cues, start=1):
        name = f"cue {n} ({cue.start:.3f}-{cue.end:.3f} s, {cue.text!r})"
        lines = cue.text.split("\n")
        if not cue.text.strip():
            problems.append(f"{name} is empty")
            continue
        if any(not line.strip() or line != line.strip() or "  " in line for line in lines):
            problems.append(f"{name} has a blank line, doubled spaces or spaces at a line's edge")
        single = len(_units(" ".join(lines))) == 1
        if len(lines) > rules.max_lines:
            problems.append(f"{name} has {len(lines)} lines (at most {rules.max_lines})")
        for k, line in enumerate(lines, start=1):
            if not rules.line_fits(line) and not single:
                wide = sum(cjk.is_cjk(c) for c in line)
                problems.append(f"{name}: line {k} is too wide: {wide} CJK and {len(line) - wide} other characters "
                                f"(at most {rules.max_line_width_cjk} CJK or {rules.max_line_width_latin} Latin)")
        if len(lines) > 1:
            for k, line in enumerate(lines, start=1):
                units = _units(line)
                if any(_stop(unit) == _SENTENCE for unit, _ in units[:-1]):
                    problems.append(f"{name}: a sentence ends inside line {k} of a cue with {len(lines)} lines")
        duration = cue.end - cue.start
        if cue.start < 0.0 or duration < 0.0:
            problems.append(f"{name} starts before 0 or ends before it starts")
        if duration > rules.max_cue_duration + _EPS and not single:
            problems.append(f"{name} lasts {duration:.3f} s (at most {rules.max_cue_duration:g})")
        if n > 1 and cue.start < cues[n - 2].end + rules.min_gap - _EPS:
            problems.append(f"{name} starts less than {rules.min_gap:g} s after cue {n - 1} ends")
        if n < len(cues) and duration < rules.min_cue_duration - _EPS \
                and cues[n].start - rules.min_gap > cue.end + _EPS:
            problems.append(f"{name} lasts {duration:.3f} s, less than {rules.min_cue_duration:.3f}, though cue "
                            f"{n + 1} leaves room")
    return problems


# ---------------------------------------------------------------------------------------------- units


@dataclass
class _Unit:
    """The smallest piece of text a cue or a line holds: never cut inside."""

    text: str
    space_before: bool  # the text has whitespace between this unit and the one before
    start: float = 0.0
    end: float = 0.0
    speaker: str | None = None


_wide = cache(cjk.is_cjk)
_unspaced = cache(cjk.unspaced)


def _units(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into units, each with whether whitespace comes before it."""
    units: list[tuple[str, bool]] = []
    for chunk in text.split():
        if units and all(c in _ATTACH_LEFT for c in chunk):  # "Wait ..." or "好 。": keep them together
            units[-1] = (f"{units[-1][0]} {chunk}", units[-1][1])
            continue
        first = True
        for char in chunk:
            if not first and _joins(units[-1][0], char):
                units[-1] = (units[-1][0] + char, units[-1][1])
            else:
                units.append((char, first and len(units) > 0))
            first = False
    return units


def _joins(unit: str, char: str) -> bool:
    """Whether ``char``, written right after ``unit``, belongs to it."""
    last = unit[-1]
    if last in _OPENING or char in _ATTACH_LEFT:
        return True
    return not (_unspaced(char) or _unspaced(last))


def _stop(unit: str) -> int:
    """What a break right after ``unit`` would follow: a sentence end, a clause end, or neither."""
    core = unit.rstrip("".join(_CLOSING))
    if not core:
        return _PLAIN
    if core.endswith(("...", "…", "‥")):
        return _CLAUSE
    if core[-1] in _SENTENCE_END:
        word = core.split()[-1].lstrip("".join(_OPENING)).lower()
        return _PLAIN if word in _ABBREVIATIONS else _SENTENCE
    return _CLAUSE if core[-1] in _CLAUSE_END else _PLAIN


def _words_in(unit: str, words: frozenset[str]) -> bool:
    return unit.strip("".join(_OPENING | _CLOSING)).lower() in words


# ---------------------------------------------------------------------------------------------- timing


def _segment_units(segment: Segment) -> list[_Unit]:
    """The segment's text as timed units, times never running backwards and never overlapping."""
    pieces = _units(segment.text)
    chars = "".join(c for text, _ in pieces for c in text if not c.isspace())
    times = _char_times(chars, segment)
    units: list[_Unit] = []
    at = 0
    for text, space in pieces:
        size = sum(not c.isspace() for c in text)
        (start, _, speaker), (_, end, _) = times[at], times[at + size - 1]
        units.append(_Unit(text, space, start, end, speaker or segment.speaker or None))
        at += size
    for before, unit in pairwise(units):
        unit.start = max(unit.start, before.start)
    for k, unit in enumerate(units):
        unit.end = max(unit.end, unit.start)
        if k + 1 < len(units):
            unit.end = min(unit.end, units[k + 1].start)
    return units


def _char_times(chars: str, segment: Segment) -> list[tuple[float, float, str | None]]:
    """A time span and speaker for each of ``chars`` (the text without whitespace), from the words."""
    timed: list[tuple[str, float, float, str | None]] = []
    for word in segment.words:
        letters = "".join(word.word.split())
        if not letters or not (math.isfinite(word.start) and math.isfinite(word.end)):
            continue
        step = (max(word.start, word.end) - word.start) / len(letters)
        timed += [(c, word.start + step * k, word.start + step * (k + 1), word.speaker) for k, c in enumerate(letters)]
    times: list[tuple[float, float, str | None] | None] = [None] * len(chars)
    spoken = "".join(t[0] for t in timed)
    if spoken == chars:
        times = [t[1:] for t in timed]
    elif timed:
        for a, b, size in SequenceMatcher(None, chars, spoken, autojunk=False).get_matching_blocks():
            times[a:a + size] = [t[1:] for t in timed[b:b + size]]
    return _fill(times, chars, segment)


def _fill(times: list[tuple[float, float, str | None] | None], chars: str,
          segment: Segment) -> list[tuple[float, float, str | None]]:
    """Time the characters no word timed: spread between their timed neighbours (or the segment's edges)."""
    k = 0
    while k < len(times):
        if times[k] is not None:
            k += 1
            continue
        stop = k
        while stop < len(times) and times[stop] is None:
            stop += 1
        before, after = times[k - 1] if k else None, times[stop] if stop < len(times) else None
        low = before[1] if before is not None else min(segment.start, after[0] if after else segment.start)
        high = max(after[0] if after is not None else segment.end, low)
        speaker = (before or after or (0.0, 0.0, None))[2]
        weights = [0 if unicodedata.category(c).startswith("P") else 1 for c in chars[k:stop]]  # punctuation: 0
        if not any(weights):
            if before is None and after is None:  # a segment of punctuation alone: spread it over the segment
                weights = [1] * len(weights)
            else:  # punctuation alone takes no time: it sits against its word
                low = high = low if before is not None else high
                weights = [1] * len(weights)
        total, done = sum(weights), 0
        for at, weight in enumerate(weights, start=k):
            times[at] = (low + (high - low) * done / total, low + (high - low) * (done + weight) / total, speaker)
            done += weight
        k = stop
    return times  # type: ignore[return-value]  # every slot is filled now


# ---------------------------------------------------------------------------------------------- cutting


def _segment_cues(segment: Segment, rules: StyleRules) -> list[Cue]:
    units = _segment_units(segment)
    cues: list[Cue] = []
    begin = 0
    for k in range(1, len(units) + 1):
        if k == len(units) or units[k].speaker != units[begin].speaker:
            cues.extend(_Run(units[begin:k], rules).cues())
            begin = k
    return cues


class _Run:
    """Units of one segment and one speaker, to be cut into cues and lines."""

    def __init__(self, units: list[_Unit], rules: StyleRules) -> None:
        self.units, self.rules = units, rules
        self.capacity = rules.line_capacity
        self.widths = [rules.width(u.text) for u in units]
        self.stops = [_PLAIN] + [self._stop(a, b) for a, b in pairwise(units)]  # stops[k]: a break before unit k
        self.weak = [False] + [_words_in(u.text, _WEAK_ENDINGS) for u in units[:-1]]  # weak[k]: before unit k
        self.phrase = [_words_in(u.text, _PHRASE_STARTS) for u in units]
        self.break_cost = [_BREAK[stop] + (_WEAK_BREAK * weak - _PHRASE_BREAK * phrase if stop == _PLAIN else 0.0)
                           for stop, weak, phrase in zip(self.stops, self.weak, self.phrase, strict=True)]
        self.layouts: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}
        #: gaps[k]: the width of the space before unit k (0 if none, or at the start of a line)
        self.gaps = [0] + [rules.space_width(a.text[-1], b.text[0]) if b.space_before else 0
                           for a, b in pairwise(units)]
        self.prefix = [0]
        self.gap_prefix = [0]
        self.sentences = [0]  # sentences[k]: how many of stops[:k] are sentence ends
        for width, gap, stop in zip(self.widths, self.gaps, self.stops, strict=True):
            self.prefix.append(self.prefix[-1] + width)
            self.gap_prefix.append(self.gap_prefix[-1] + gap)
            self.sentences.append(self.sentences[-1] + (stop == _SENTENCE))
        self.next_end = [len(units)] * (len(units) + 1)  # next_end[k]: the first sentence end at k or after
        for k in range(len(units) - 1, -1, -1):
            self.next_end[k] = k if self.stops[k] == _SENTENCE else self.next_end[k + 1]

    @staticmethod
    def _stop(before: _Unit, unit: _Unit) -> int:
        stop = _stop(before.text)
        if stop == _PLAIN and unit.space_before and _unspaced(before.text[-1]) and _unspaced(unit.text[0]):
            return _CLAUSE  # the model wrote a space between two Chinese or Japanese characters: a pause
        return stop

    def cues(self) -> list[Cue]:
        return [Cue(self.units[i].start, self.units[j - 1].end, "\n".join(self.lines(i, j)), self.units[i].speaker)
                for i, j in self.cut()]

    # -------------------------------------------------------------------- measures

    def width(self, i: int, j: int) -> int:
        """Width of units ``i`` to ``j - 1`` on one line."""
        return self.prefix[j] - self.prefix[i] + self.gap_prefix[j] - self.gap_prefix[i + 1]

    def duration(self, i: int, j: int) -> float:
        return self.units[j - 1].end - self.units[i].start

    def sentence_lines(self, i: int, j: int) -> list[int] | None:
        """Where a cue of units ``i`` to ``j - 1`` must break: after every sentence end inside it, when it
        needs more than one line; ``None`` when that leaves a line too wide or too many lines."""
        if self.width(i, j) <= self.capacity or self.sentences[j] == self.sentences[i + 1]:
            return []
        if self.sentences[j] - self.sentences[i + 1] >= self.rules.max_lines:
            return None
        ends = [self.next_end[i + 1]]
        while self.next_end[ends[-1] + 1] < j:
            ends.append(self.next_end[ends[-1] + 1])
        if any(self.width(a, b) > self.capacity for a, b in pairwise([i, *ends, j])):
            return None
        return ends

    # -------------------------------------------------------------------- cues

    def cut(self) -> list[tuple[int, int]]:
        """The cheapest way to cut the run into cues that each fit (or hold one unit): ``(i, j)`` pairs.

        For each end ``j``, cues ending there are tried from the shortest up, filling lines from the
        last one back (as good as filling from the first: either needs the fewest lines), until one
        is too wide or too long; a longer one would be too.
        """
        n, rules, capacity = len(self.units), self.rules, self.capacity
        best = [0.0] + [math.inf] * n
        back = [0] * (n + 1)
        for j in range(1, n + 1):
            lines, used = (1 if self.widths[j - 1] <= capacity else math.inf), self.widths[j - 1]
            for i in range(j - 1, -1, -1):
                if i < j - 1:
                    more = self.widths[i] + self.gaps[i + 1]
                    if used + more <= capacity:
                        used += more
                    else:
                        lines, used = lines + 1, self.widths[i]
                    if used > capacity or lines > rules.max_lines \
                            or self.duration(i, j) > rules.max_cue_duration + _EPS:
                        break  # longer cues, starting earlier, cannot fit either
                    if self.sentence_lines(i, j) is None:
                        continue
                cost = best[i] + self.cue_cost(i, j)
                if cost < best[j]:  # before the line breaks are weighed: they only add to it
                    cost += self.layout(i, j)[0]
                    if cost < best[j]:
                        best[j], back[j] = cost, i
        pieces: list[tuple[int, int]] = []
        j = n
        while j > 0:
            pieces.append((back[j], j))
            j = back[j]
        return pieces[::-1]

    def cue_cost(self, i: int, j: int) -> float:
        """What a cue of units ``i`` to ``j - 1`` costs, less its line breaks (:meth:`layout`)."""
        cost = _CUE
        if j < len(self.units):  # the cut after this cue
            stop = self.stops[j]
            cost += _CUT[stop]
            if stop == _PLAIN:
                pause = self.units[j].start - self.units[j - 1].end
                cost += _WEAK_CUT * self.weak[j] - _PHRASE_CUT * self.phrase[j] - min(max(pause, 0.0), _PAUSE_BONUS_MAX)
        fill = min(1.0, self.width(i, j) / (self.rules.max_lines * self.capacity))
        cost += _EMPTY_CUE * (1.0 - fill) ** 2
        short = self.rules.min_cue_duration - self.duration(i, j)
        if short > 0.0 and self.rules.min_cue_duration > 0.0:
            cost += _SHORT_CUE * short / self.rules.min_cue_duration
        return cost

    # -------------------------------------------------------------------- lines

    def lines(self, i: int, j: int) -> list[str]:
        """The text of units ``i`` to ``j - 1`` as lines, broken where they read best."""
        bounds = [i, *self.layout(i, j)[1], j]
        return [self.text(a, b) for a, b in pairwise(bounds)]

    def layout(self, i: int, j: int) -> tuple[float, tuple[int, ...]]:
        """The cost and places of the line breaks of a cue of units ``i`` to ``j - 1`` that fits.

        One line when it fits on one (cost 0); else a break after every sentence end, when there are
        any; else 2 to max_lines lines, broken where it costs least. The cost is what the breaks cost
        plus how uneven the lines are.
        """
        if (i, j) in self.layouts:
            return self.layouts[i, j]
        if j - i == 1 or self.width(i, j) <= self.capacity or self.rules.max_lines == 1:
            found: tuple[float, tuple[int, ...]] = (0.0, ())
        elif ends := self.sentence_lines(i, j):
            found = (self.uneven(i, j, ends), tuple(ends))
        else:
            options = []
            for lines in range(2, self.rules.max_lines + 1):
                cost, breaks = self._breaks(i, j, lines)
                if breaks:  # cost less the sum of squared widths is what the breaks cost
                    squares = sum(share * share for share in self.shares(i, j, breaks))
                    options.append((cost - squares + self.uneven(i, j, breaks) + _EXTRA_LINE * (lines - 2), breaks))
            found = min(options, key=lambda o: o[0])
        self.layouts[i, j] = found
        return found

    def shares(self, i: int, j: int, breaks: Sequence[int]) -> list[float]:
        """The share of a line each line of units ``i`` to ``j - 1`` broken at ``breaks`` fills."""
        return [self.width(a, b) / self.capacity for a, b in pairwise([i, *breaks, j])]

    def uneven(self, i: int, j: int, breaks: Sequence[int]) -> float:
        """How uneven the lines are: the sum of squared differences from their mean width, in line widths."""
        shares = self.shares(i, j, breaks)
        return sum(share * share for share in shares) - sum(shares) ** 2 / len(shares)

    def _breaks(self, i: int, j: int, lines: int) -> tuple[float, tuple[int, ...]]:
        """The breaks into ``lines`` lines that make the least sum of squared line widths plus break costs
        (for a given number of lines, the least squares are the most even lines)."""

        @cache
        def best(k: int, lines: int) -> tuple[float, tuple[int, ...]]:
            if lines == 1:
                fits = self.width(k, j) <= self.capacity
                return ((self.width(k, j) / self.capacity) ** 2 if fits else math.inf), ()
            found: tuple[float, tuple[int, ...]] = (math.inf, ())
            for at in range(self.first_tail(k, j) if lines == 2 else k + 1, j):
                head = self.width(k, at)
                if head > self.capacity:
                    break
                rest, breaks = best(at, lines - 1)
                cost = (head / self.capacity) ** 2 + self.break_cost[at] + rest
                if cost < found[0]:
                    found = (cost, (at, *breaks))
            return found

        return best(i, lines)

    def first_tail(self, k: int, j: int) -> int:
        """The first unit after ``k`` from which units up to ``j - 1`` fit on one line (``j`` if none)."""
        low, high = k + 1, j
        while low < high:
            middle = (low + high) // 2
            if self.width(middle, j) <= self.capacity:
                high = middle
            else:
                low = middle + 1
        return low

    def text(self, i: int, j: int) -> str:
        return "".join((" " if k > i and u.space_before else "") + u.text for k, u in enumerate(self.units[i:j], i))


def _make_gaps(cues: list[Cue], min_gap: float) -> list[Cue]:
    """End each cue ``min_gap`` before the next starts, where it can: the next cue keeps its start on the speech."""
    if min_gap <= 0.0:
        return cues
    return [replace(cue, end=max(cue.start, min(cue.end, after.start - min_gap)))
            for cue, after in pairwise(cues)] + cues[-1:]


def _lengthen(cues: list[Cue], rules: StyleRules, speech_end: float) -> list[Cue]:
    """Hold each cue for ``min_cue_duration`` where the next cue (or the end of the speech) leaves room."""
    result = []
    for k, cue in enumerate(cues):
        room = cues[k + 1].start - rules.min_gap if k + 1 < len(cues) else speech_end
        result.append(replace(cue, end=max(cue.end, min(cue.start + rules.min_cue_duration, room))))
    return result
