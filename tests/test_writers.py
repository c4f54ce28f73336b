"""The writers: SRT, WebVTT, TXT, TSV and the JSON result, the cue rules, and CJK-aware joining.

SRT and VTT are checked by parsing them back with a strict parser (below), never by substring search.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klipnote import cjk, writers
from klipnote.job import OutputFormat, output_name
from klipnote.subtitles import Cue, build_cues
from klipnote.transcript import Segment, Transcript, Word

# ---------------------------------------------------------------------------------------------- helpers


def seg(start: float, end: float, text: str, speaker: str | None = None, words: list[Word] | None = None) -> Segment:
    return Segment(start, end, text, words or [], speaker)


def make(*segments: Segment, language: str | None = "en", probability: float | None = 0.9) -> Transcript:
    return Transcript(list(segments), language, probability)


@dataclass(frozen=True)
class Parsed:
    """One cue read back from an SRT or VTT file; times in integer milliseconds."""

    start_ms: int
    end_ms: int
    text: str  # the text lines joined by "\n"


def _time_pattern(sep: str) -> str:
    return r"(\d{2,}):([0-5]\d):([0-5]\d)" + re.escape(sep) + r"(\d{3})"


_TEXT = r"((?:[^\n]+\n)+)"  # one or more non-empty lines


def _block_pattern(sep: str, numbered: bool) -> re.Pattern[str]:
    time = _time_pattern(sep)
    number = r"(\d+)\n" if numbered else r"()"
    return re.compile(rf"{number}{time} --> {time}\n{_TEXT}")


_SRT_BLOCK = _block_pattern(",", numbered=True)
_VTT_BLOCK = _block_pattern(".", numbered=False)


def _millis(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_time(text: str, sep: str) -> int:
    match = re.fullmatch(_time_pattern(sep), text)
    assert match, text
    return _millis(*match.groups())


def _parse_blocks(body: str, pattern: re.Pattern[str]) -> list[tuple[str, Parsed]]:
    """Blocks matching ``pattern`` separated by exactly one blank line, ending right after the last."""
    blocks: list[tuple[str, Parsed]] = []
    pos = 0
    while pos < len(body):
        if blocks:
            assert body[pos] == "\n", f"no blank line between blocks at {pos}: {body[pos:pos + 40]!r}"
            pos += 1
        match = pattern.match(body, pos)
        assert match, f"malformed block at {pos}: {body[pos:pos + 80]!r}"
        number, *times, text = match.groups()
        blocks.append((number, Parsed(_millis(*times[:4]), _millis(*times[4:]), text.removesuffix("\n"))))
        pos = match.end()
    return blocks


def parse_srt(doc: str) -> list[Parsed]:
    blocks = _parse_blocks(doc, _SRT_BLOCK)
    assert [number for number, _ in blocks] == [str(n) for n in range(1, len(blocks) + 1)]
    return [cue for _, cue in blocks]


def parse_vtt(doc: str) -> list[Parsed]:
    assert doc.startswith("WEBVTT\n\n"), doc[:40]
    return [cue for _, cue in _parse_blocks(doc.removeprefix("WEBVTT\n\n"), _VTT_BLOCK)]


PARSERS = {OutputFormat.SRT: parse_srt, OutputFormat.VTT: parse_vtt}


def rendered(transcript: Transcript, fmt: OutputFormat, metadata: dict | None = None) -> str:
    return writers.render(transcript, (fmt,), metadata or {})[output_name(fmt)]


def result(transcript: Transcript, metadata: dict | None = None) -> dict:
    return json.loads(rendered(transcript, OutputFormat.JSON, metadata))


def close_to_ms(parsed_ms: int, seconds: float) -> bool:
    """Whether a written time is ``seconds`` rounded to the millisecond (either way at an exact tie)."""
    return abs(parsed_ms - max(0.0, seconds) * 1000) <= 0.5 + 1e-6


def half_up_ms(seconds: float) -> int:
    return math.floor(seconds * 1000 + 0.5)


def nonempty_texts(segments: list[Segment]) -> list[str]:
    return [" ".join(s.text.split()) for s in segments if s.text.strip()]


def in_time_order(segments: list[Segment]) -> list[Segment]:
    return sorted(segments, key=lambda s: (s.start, s.end))


# ---------------------------------------------------------------------------------------------- strategies

TIMES = st.floats(min_value=-5.0, max_value=40_000.0, allow_nan=False, allow_infinity=False)
DURATIONS = st.floats(min_value=-2.0, max_value=600.0, allow_nan=False, allow_infinity=False)
# No control characters (newlines and tabs have their own tests), no surrogates, no line separators.
LINE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=25)
TEXTS = st.one_of(LINE_TEXT, st.sampled_from(["", " ", "   ", "开放时间", "hello world", "，"]))
SPEAKERS = st.one_of(st.none(), st.sampled_from(["SPEAKER_00", "SPEAKER_01"]))
WORDS = st.lists(st.builds(Word, st.text(min_size=1, max_size=8), TIMES, TIMES,
                           st.one_of(st.none(), st.floats(0, 1))), max_size=3)


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    start = draw(TIMES)
    return Segment(start, start + draw(DURATIONS), draw(TEXTS), draw(WORDS), draw(SPEAKERS))


SEGMENT_LISTS = st.lists(segments(), max_size=12)


# ---------------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.0, "00:00:00,000"),
    (1.5, "00:00:01,500"),
    (0.0004, "00:00:00,000"),
    (0.0006, "00:00:00,001"),
    (59.9996, "00:01:00,000"),  # rounding carries into the minutes
    (61.001, "00:01:01,001"),
    (3599.9999, "01:00:00,000"),  # ... and into the hours
    (3723.456, "01:02:03,456"),  # over an hour
    (36123.4, "10:02:03,400"),  # over ten hours
    (359_999.999, "99:59:59,999"),
    (-1.0, "00:00:00,000"),  # never negative
])
def test_timestamp_format_and_rounding(seconds: float, expected: str) -> None:
    assert writers.timestamp(seconds, ",") == expected
    assert writers.timestamp(seconds, ".") == expected.replace(",", ".")




@pytest.mark.parametrize(("seconds", "expected"), [
    # Each of these is an exact binary tie (seconds * 1000 == n + 0.5), so half-up is unambiguous.
    (0.0005, "00:00:00,001"),
    (0.0015, "00:00:00,002"),
    (0.0025, "00:00:00,003"),
    (0.0035, "00:00:00,004"),
    (1.0625, "00:00:01,063"),
])
def test_timestamp_rounds_half_a_millisecond_up(seconds: float, expected: str) -> None:
    assert writers.timestamp(seconds, ",") == expected


@given(st.floats(min_value=0, max_value=400_000, allow_nan=False), st.floats(min_value=0, max_value=400_000))
def test_timestamp_is_the_time_to_the_millisecond_and_monotonic(a: float, b: float) -> None:
    early, late = (parse_time(writers.timestamp(x, ","), ",") for x in sorted((a, b)))
    assert close_to_ms(early, min(a, b))
    assert close_to_ms(late, max(a, b))
    assert early <= late


# ---------------------------------------------------------------------------------------------- SRT and VTT

TWO_CUES = make(seg(3723.456, 3725.0, " Hello there. "), seg(0.5, 2.25, "开放时间"))


def test_srt_exact_text() -> None:
    assert rendered(TWO_CUES, OutputFormat.SRT) == (
        "1\n00:00:00,500 --> 00:00:02,250\n开放时间\n"
        "\n"
        "2\n01:02:03,456 --> 01:02:05,000\nHello there.\n"
    )


def test_vtt_exact_text() -> None:
    assert rendered(TWO_CUES, OutputFormat.VTT) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.500 --> 00:00:02.250\n开放时间\n"
        "\n"
        "01:02:03.456 --> 01:02:05.000\nHello there.\n"
    )


@pytest.mark.parametrize("fmt", PARSERS)
def test_subtitles_parse_back_to_the_cues(fmt: OutputFormat) -> None:
    transcript = make(seg(0, 1, "one"), seg(1, 2.5, "two"), seg(40_000.25, 40_001, "three"))
    parsed = PARSERS[fmt](rendered(transcript, fmt))
    assert parsed == [Parsed(0, 1000, "one"), Parsed(1000, 2500, "two"), Parsed(40_000_250, 40_001_000, "three")]


@pytest.mark.parametrize("fmt", PARSERS)
def test_subtitles_of_an_empty_transcript(fmt: OutputFormat) -> None:
    assert PARSERS[fmt](rendered(make(seg(0, 1, "  ")), fmt)) == []


@pytest.mark.parametrize("fmt", PARSERS)
def test_speaker_is_a_prefix_of_the_cue_text_only_when_set(fmt: OutputFormat) -> None:
    transcript = make(seg(0, 1, "hello", speaker="SPEAKER_00"), seg(1, 2, "bye"))
    assert [c.text for c in PARSERS[fmt](rendered(transcript, fmt))] == ["[SPEAKER_00] hello", "bye"]


@pytest.mark.parametrize("fmt", PARSERS)
def test_a_blank_line_inside_a_segment_does_not_split_the_cue(fmt: OutputFormat) -> None:
    parsed = PARSERS[fmt](rendered(make(seg(0, 1, "first part\n\nsecond part"), seg(1, 2, "next")), fmt))
    assert len(parsed) == 2
    assert parsed[0].text.split() == ["first", "part", "second", "part"]


# ---------------------------------------------------------------------------------------------- cue rules


@given(SEGMENT_LISTS)
def test_cues_are_ordered_and_never_overlap(segs: list[Segment]) -> None:
    cues = build_cues(make(*segs))
    assert all(cue.end >= cue.start >= 0.0 for cue in cues)
    for previous, cue in pairwise(cues):
        assert cue.start >= previous.end


def characters(texts: Iterable[str]) -> Counter:
    """Every non-space character of the texts, counted: a cue may hold part of a segment, or two lines."""
    return Counter("".join("".join(text.split()) for text in texts))


@given(SEGMENT_LISTS)
def test_every_nonempty_segment_is_carried_by_its_cues(segs: list[Segment]) -> None:
    """Segments may be cut into several cues (tests/test_subtitles.py has the rules); none is lost."""
    cues = build_cues(make(*segs))
    assert all(c.text and all(line and line == line.strip() for line in c.text.split("\n")) for c in cues)
    assert characters(c.text for c in cues) == characters(s.text for s in segs)
    assert {c.speaker for c in cues} == {s.speaker for s in segs if s.text.strip()}


def test_a_short_segment_without_words_is_one_cue() -> None:
    cues = build_cues(make(seg(0, 1, "one"), seg(1, 2.5, "two words", speaker="SPEAKER_00")))
    assert cues == [Cue(0, 1, "one"), Cue(1, 2.5, "two words", "SPEAKER_00")]


def test_overlapping_cue_is_clipped_to_start_when_the_previous_ends() -> None:
    cues = build_cues(make(seg(5, 6, "later"), seg(0, 3, "first"), seg(2, 4, "overlaps"), seg(2.5, 2.8, "in")))
    # "in", clipped to nothing, is then held for the minimum duration: "later" leaves room
    assert cues == [Cue(0, 3, "first"), Cue(3, 4, "overlaps"), Cue(4, 4 + 5 / 6, "in"), Cue(5, 6, "later")]


@pytest.mark.parametrize("fmt", PARSERS)
@given(segs=SEGMENT_LISTS)
def test_subtitles_parse_back_to_as_many_cues_in_time_order(fmt: OutputFormat, segs: list[Segment]) -> None:
    transcript = make(*segs)
    cues = build_cues(transcript)
    parsed = PARSERS[fmt](rendered(transcript, fmt))
    assert len(parsed) == len(cues)
    for cue, back in zip(cues, parsed, strict=True):
        assert back.text == cue.display_text
        assert close_to_ms(back.start_ms, cue.start)
        assert close_to_ms(back.end_ms, cue.end)
    times = [t for p in parsed for t in (p.start_ms, p.end_ms)]
    assert times == sorted(times)


# ---------------------------------------------------------------------------------------------- TXT and TSV


def test_txt_has_one_line_per_nonempty_segment() -> None:
    transcript = make(seg(0, 1, " Hello. "), seg(1, 2, ""), seg(2, 3, "开放时间。"))
    assert rendered(transcript, OutputFormat.TXT) == "Hello.\n开放时间。\n"


def test_txt_of_an_empty_transcript_is_empty() -> None:
    assert rendered(make(), OutputFormat.TXT) == ""


@given(SEGMENT_LISTS)
def test_txt_lines_are_the_segment_texts(segs: list[Segment]) -> None:
    assert rendered(make(*segs), OutputFormat.TXT).split("\n") == [*nonempty_texts(segs), ""]


def test_txt_keeps_a_multiline_segment_on_one_line() -> None:
    assert rendered(make(seg(0, 1, "first\nsecond"), seg(1, 2, "third")), OutputFormat.TXT) == "first second\nthird\n"


def test_tsv_header_and_integer_milliseconds() -> None:
    transcript = make(seg(3723.456, 3725, "Hello."), seg(5, 6, "  "), seg(0.0004, 1.2, "开放时间"))
    assert rendered(transcript, OutputFormat.TSV) == "start\tend\ttext\n3723456\t3725000\tHello.\n0\t1200\t开放时间\n"


def test_tsv_collapses_tabs_and_newlines_in_text() -> None:
    rows = rendered(make(seg(0, 1, " a\tb\n c \r\n\td ")), OutputFormat.TSV).splitlines()
    assert rows == ["start\tend\ttext", "0\t1000\ta b c d"]


@given(st.lists(st.builds(seg, TIMES, TIMES, st.text(max_size=20)), max_size=8))
def test_tsv_rows_are_three_fields_with_integer_times(segs: list[Segment]) -> None:
    header, *rows = rendered(make(*segs), OutputFormat.TSV).removesuffix("\n").split("\n")
    assert header == "start\tend\ttext"
    fields = [row.split("\t") for row in rows]
    assert all(len(f) == 3 for f in fields)
    assert [text for _, _, text in fields] == [" ".join(s.text.split()) for s in segs if s.text.split()]
    kept = [s for s in segs if s.text.split()]
    assert [(int(a), int(b)) for a, b, _ in fields] == [(half_up_ms(s.start), half_up_ms(s.end)) for s in kept]


# ---------------------------------------------------------------------------------------------- JSON and render

METADATA = {"job": "j-1", "input": {"name": "talk.mp3", "duration": 12.5}, "engine": "whisperx", "ratio": None}


def test_render_names_each_output_after_its_format() -> None:
    outputs = writers.render(TWO_CUES, tuple(OutputFormat), METADATA)
    assert sorted(outputs) == sorted(f"transcript.{ext}" for ext in ("srt", "vtt", "txt", "tsv", "json", "html"))


def test_render_writes_only_what_was_asked() -> None:
    assert list(writers.render(TWO_CUES, (OutputFormat.SRT, OutputFormat.JSON), {})) == [
        "transcript.srt", "transcript.json"]


def test_json_result_shape() -> None:
    word = Word("Hello", 0.5, 0.9, 0.75)
    data = result(make(seg(0.5, 2, " Hello. ", words=[word]), language="en", probability=0.97), METADATA)
    assert data == {
        "language": "en",
        "language_probability": 0.97,
        "text": "Hello.",
        "segments": [{"start": 0.5, "end": 2, "text": " Hello. ",
                      "words": [{"word": "Hello", "start": 0.5, "end": 0.9, "score": 0.75}]}],
        "cues": [{"start": 0.5, "end": 0.5 + 5 / 6, "text": "Hello."}],  # the word's time, held for 5/6 s
        "metadata": METADATA,
    }


def test_json_keeps_cjk_readable() -> None:
    assert "开放时间" in rendered(make(seg(0, 1, "开放时间")), OutputFormat.JSON)


def test_json_speaker_key_only_when_set() -> None:
    data = result(make(seg(0, 1, "hi", speaker="SPEAKER_01"), seg(1, 2, "bye")))
    assert [s.get("speaker", "absent") for s in data["segments"]] == ["SPEAKER_01", "absent"]
    assert [c.get("speaker", "absent") for c in data["cues"]] == ["SPEAKER_01", "absent"]


@given(SEGMENT_LISTS, st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.none())))
def test_json_result_keeps_every_segment_word_and_the_metadata(segs: list[Segment], metadata: dict) -> None:
    transcript = make(*segs)
    data = result(transcript, metadata)
    assert data["metadata"] == metadata
    assert data["text"] == transcript.text
    assert len(data["segments"]) == len(segs)
    for written, segment in zip(data["segments"], segs, strict=True):
        assert set(written) == {"start", "end", "text", "words"} | ({"speaker"} if segment.speaker else set())
        assert (written["start"], written["end"], written["text"]) == (segment.start, segment.end, segment.text)
        assert written["words"] == [{"word": w.word, "start": w.start, "end": w.end, "score": w.score}
                                    for w in segment.words]
    assert characters(c["text"] for c in data["cues"]) == characters(s.text for s in segs)


@given(SEGMENT_LISTS)
def test_json_text_is_what_the_cues_carry(segs: list[Segment]) -> None:
    """No word lost: the transcript's text and the cues' texts hold the same characters."""
    data = result(make(*in_time_order(segs)))
    assert characters([data["text"]]) == characters(c["text"] for c in data["cues"])


# ---------------------------------------------------------------------------------------------- CJK joining


@pytest.mark.parametrize(("parts", "expected"), [
    (["开放", "时间"], "开放时间"),
    (["こんにちは", "世界"], "こんにちは世界"),
    (["hello", "world"], "hello world"),
    ([" hello ", "", "   ", "world "], "hello world"),
    (["Hello", ",", "world", "."], "Hello, world."),
    (["开放", "，", "时间", "。"], "开放，时间。"),
    (["Wait", "!", "Really", "?"], "Wait! Really?"),
    (["say", "(", "hi", ")"], "say (hi)"),
    (["说", "（", "你好", "）"], "说（你好）"),
    (["书名", "《", "三体", "》"], "书名《三体》"),
])
def test_join(parts: list[str], expected: str) -> None:
    assert cjk.join(parts) == expected


def test_join_keeps_spaces_between_korean_words() -> None:
    assert cjk.join(["안녕하세요", "여러분"]) == "안녕하세요 여러분"


def test_join_keeps_the_space_before_an_opening_ascii_quote() -> None:
    assert cjk.join(["He said:", '"Go home."']) == 'He said: "Go home."'


HAN = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=6)
LATIN = st.text(st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")), min_size=1, max_size=6)


@given(st.lists(HAN))
def test_join_han_without_spaces(parts: list[str]) -> None:
    assert cjk.join(parts) == "".join(parts)


@given(st.lists(LATIN))
def test_join_latin_with_single_spaces(parts: list[str]) -> None:
    assert cjk.join(parts) == " ".join(parts)


def test_transcript_text_joins_chinese_segments_without_spaces() -> None:
    transcript = make(seg(0, 1, "开放时间"), seg(1, 2, " 是早上九点 "), seg(2, 3, "。"), language="zh")
    assert transcript.text == "开放时间是早上九点。"


def test_transcript_text_joins_english_segments_with_spaces() -> None:
    transcript = make(seg(0, 1, " And so, my fellow Americans,"), seg(1, 2, " ask not."), seg(2, 3, ""))
    assert transcript.text == "And so, my fellow Americans, ask not."
