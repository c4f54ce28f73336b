"""Subtitle cues after broadcast style rules: build_cues, check_rules and StyleRules.

The property tests build transcripts the way the engines do (a segment's text is its words joined by
cjk.join, times never run backwards) and check every promise of build_cues against the words.
"""

from __future__ import annotations

import string
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klipnote import cjk, defaults
from klipnote.subtitles import (
    Cue,
    StyleRules,
    build_cues,
    check_rules,
    cues_per_segment,
    ordered,
)
from klipnote.transcript import Segment, Transcript, Word

RULES = StyleRules()
EPS = 1e-6
NO_LINE_START = ",.!?;:，。！？、；："


def squash(text: str) -> str:
    """The text without whitespace (line breaks included): what must survive cutting."""
    return "".join(text.split())


def words_of(text: str, start: float = 0.0, per_char: float = 0.06, pause: float = 0.05,
             speaker: str | None = None) -> list[Word]:
    """Words of a Latin-script text, timed one after another, each as long as its letters."""
    words, at = [], start
    for word in text.split():
        words.append(Word(word, round(at, 3), round(at + per_char * len(word), 3), None, speaker))
        at += per_char * len(word) + pause
    return words


def chars_of(text: str, start: float = 0.0, each: float = 0.2, pause: float = 0.05) -> list[Word]:
    """One timed word per character, as the belle2 engine and whisperx's Chinese alignment give them."""
    return [Word(c, round(start + k * (each + pause), 3), round(start + k * (each + pause) + each, 3))
            for k, c in enumerate(text)]


def segment(words: list[Word], speaker: str | None = None, text: str | None = None) -> Segment:
    text = cjk.join(w.word for w in words) if text is None else text
    return Segment(words[0].start, words[-1].end, text, words, speaker)


def transcript(*segments: Segment, language: str = "en") -> Transcript:
    return Transcript(list(segments), language)


def lines(cues: list[Cue]) -> list[str]:
    return [line for cue in cues for line in cue.text.split("\n")]


# ---------------------------------------------------------------------------------------------- strategies

LATIN_WORD = st.builds(str.__add__, st.sampled_from(string.ascii_letters),
                       st.text(string.ascii_lowercase + "'-0123456789", max_size=11))
OVERLONG_WORD = st.text(string.ascii_lowercase, min_size=43, max_size=60)
LATIN_PUNCT = st.sampled_from(["", "", "", "", "", ",", ".", "?", "!", ";", ":"])
HAN_WORD = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=3)
CJK_PUNCT = st.sampled_from(["", "", "", "", "，", "。", "！", "？", "、", "；"])
PAUSES = st.one_of(st.just(0.0), st.floats(0.0, 0.4), st.floats(0.0, 3.0))
DURATIONS = st.one_of(st.floats(0.02, 0.8), st.floats(0.02, 0.8), st.floats(0.02, 0.8), st.floats(0.8, 9.0))
SPEAKERS = st.sampled_from([None, "SPEAKER_00", "SPEAKER_01"])


@st.composite
def word_text(draw: st.DrawFn, script: str) -> str:
    kind = script if script != "mixed" else draw(st.sampled_from(["latin", "cjk"]))
    if kind == "cjk":
        return draw(HAN_WORD) + draw(CJK_PUNCT)
    core = draw(st.one_of(LATIN_WORD, LATIN_WORD, LATIN_WORD, LATIN_WORD, LATIN_WORD, LATIN_WORD, OVERLONG_WORD))
    return core + draw(LATIN_PUNCT)


@st.composite
def transcripts(draw: st.DrawFn) -> Transcript:
    """1 to 3 segments one after another, each 1 to 30 words of Latin text, Chinese or both."""
    segments, at = [], draw(st.floats(0.0, 100.0))
    for _ in range(draw(st.integers(1, 3))):
        script = draw(st.sampled_from(["latin", "cjk", "mixed"]))
        speaker = draw(SPEAKERS)
        words = []
        for _ in range(draw(st.integers(1, 30))):
            at += draw(PAUSES)
            duration = draw(DURATIONS)
            words.append(Word(draw(word_text(script)), round(at, 3), round(at + duration, 3), None, speaker))
            at = round(at + duration, 3)
        tail = draw(st.floats(0.0, 2.0))
        segments.append(Segment(words[0].start, words[-1].end + tail, cjk.join(w.word for w in words), words,
                                speaker))
        at += tail + draw(PAUSES)
    return transcript(*segments)


RANDOM_RULES = st.builds(
    StyleRules,
    max_line_width_latin=st.integers(8, 60),
    max_line_width_cjk=st.integers(4, 24),
    max_lines=st.integers(1, 3),
    max_cue_duration=st.floats(2.0, 10.0),
    min_cue_duration=st.floats(0.0, 1.5),
    min_gap=st.sampled_from([0.0, 0.0, 0.04, 0.1]),
)


# ---------------------------------------------------------------------------------------------- properties


def assert_cues_keep_the_promises(t: Transcript, rules: StyleRules) -> None:
    cues = build_cues(t, rules)
    words = [w for s in t.segments for w in s.words]

    # every character of every word, once, in order
    assert "".join(squash(c.text) for c in cues) == "".join(squash(w.word) for w in words)

    owner = [k for k, w in enumerate(words) for _ in squash(w.word)]  # the word each character is from
    word_starts = {pos for pos, (a, b) in enumerate(pairwise([-1, *owner])) if a != b}
    breaks = set()  # positions (in the characters without whitespace) where a cue or a line ends
    pos = 0
    for n, cue in enumerate(cues):
        size = len(squash(cue.text))
        first, last = words[owner[pos]], words[owner[pos + size - 1]]
        # times inside the span of the cue's words, or held on for min_cue_duration at most; min_gap
        # may end a cue before its last word does, or (when that cannot make the gap) start the next late
        before = cues[n - 1].end + rules.min_gap if n else 0.0
        after = cues[n + 1].start - rules.min_gap if n + 1 < len(cues) else float("inf")
        assert first.start - EPS <= cue.start <= max(first.end, before) + EPS, (cue, first)
        assert min(last.start, after) - EPS <= cue.end <= max(last.end, cue.start + rules.min_cue_duration) + EPS, \
            (cue, last)
        # one speaker, the words'
        assert {words[k].speaker for k in owner[pos:pos + size]} == {cue.speaker}
        at = pos
        for line in cue.text.split("\n"):
            at += len(squash(line))
            breaks.add(at)
        # the only cue allowed to break a rule: a single unit (here: one word, or one character of one)
        raw_problems = (len(cue.text.split("\n")) > rules.max_lines
                        or not all(rules.line_fits(line) for line in cue.text.split("\n"))
                        or cue.end - cue.start > rules.max_cue_duration + EPS)
        if raw_problems:
            assert owner[pos] == owner[pos + size - 1], cue
            assert " " not in cue.text and "\n" not in cue.text
        pos += size

    # in time order, never overlapping, min_gap apart
    assert all(0.0 <= c.start <= c.end for c in cues)
    for before, cue in pairwise(cues):
        assert cue.start >= before.end + rules.min_gap - EPS
    assert check_rules(cues, rules) == []  # check_rules lets the last cue be short: here is why it may be
    speech_end = max(s.end for s in t.segments)
    assert cues[-1].end >= min(cues[-1].start + rules.min_cue_duration, speech_end) - EPS

    text = "".join(squash(w.word) for w in words)
    for at in breaks - {0, len(text)}:
        # never inside a Latin word: only between words, or next to a Chinese character
        assert at in word_starts or cjk.is_cjk(text[at - 1]) or cjk.is_cjk(text[at]), (at, text)
    for line in lines(cues):
        assert line == line.strip() and "  " not in line
        assert line[0] not in NO_LINE_START, line
        for k, char in enumerate(line):
            if char == " ":  # never a space between two CJK characters
                assert not (cjk.is_cjk(line[k - 1]) and cjk.is_cjk(line[k + 1])), line


@settings(max_examples=200, deadline=None)
@given(transcripts())
def test_cues_keep_every_word_in_order_and_every_rule(t: Transcript) -> None:
    assert_cues_keep_the_promises(t, RULES)


@settings(max_examples=150, deadline=None)
@given(transcripts(), RANDOM_RULES)
def test_cues_keep_any_rules(t: Transcript, rules: StyleRules) -> None:
    assert_cues_keep_the_promises(t, rules)


@settings(max_examples=30, deadline=None)
@given(transcripts())
def test_build_cues_leaves_the_transcript_alone(t: Transcript) -> None:
    before = repr(t)
    assert build_cues(t) == build_cues(t)
    assert repr(t) == before


@settings(deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 100), st.floats(0, 20), st.text(max_size=60), SPEAKERS), max_size=8))
def test_overlapping_wordless_segments_keep_every_character_and_never_overlap(raw: list) -> None:
    segs = [Segment(start, start + length, text, [], speaker) for start, length, text, speaker in raw]
    cues = build_cues(transcript(*segs))
    assert sorted(squash("".join(c.text for c in cues))) == sorted(squash("".join(s.text for s in segs)))
    assert all(0.0 <= c.start <= c.end for c in cues)
    for before, cue in pairwise(cues):
        assert cue.start >= before.end


# ---------------------------------------------------------------------------------------------- examples

DICKENS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair. We had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way. In short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted."
)


@pytest.mark.parametrize("text", [DICKENS, DICKENS.lower().replace(",", "").replace(".", "")],
                         ids=["punctuated", "unpunctuated"])
def test_a_30_s_segment_of_480_characters_becomes_many_cues_within_the_rules(text: str) -> None:
    text = text[:480].rsplit(" ", 1)[0]
    assert len(text) >= 470
    ws = text.split()
    step = 30.0 / len(ws)
    words = [Word(w, round(k * step, 3), round(k * step + 0.9 * step, 3)) for k, w in enumerate(ws)]
    cues = build_cues(transcript(segment(words)))
    assert len(cues) >= 6
    assert all(len(line) <= 42 for line in lines(cues))
    assert all(len(c.text.split("\n")) <= 2 for c in cues)
    assert all(c.end - c.start <= 7.0 for c in cues)
    assert check_rules(cues) == []
    assert " ".join(c.text.replace("\n", " ") for c in cues) == text
    assert cues[0].start == 0.0 and cues[-1].end == words[-1].end


def test_a_punctuated_segment_is_cut_at_sentence_and_clause_ends() -> None:
    first_sentence = DICKENS.split(" We had", maxsplit=1)[0]
    cues = build_cues(transcript(segment(words_of(first_sentence))))
    assert [c.text for c in cues] == [
        "It was the best of times,\nit was the worst of times,",
        "it was the age of wisdom,\nit was the age of foolishness,",
        "it was the epoch of belief,\nit was the epoch of incredulity,",
        "it was the season of Light,\nit was the season of Darkness,",
        "it was the spring of hope,\nit was the winter of despair.",
    ]


CHINESE = ("今天天气很好，我们一起去公园散步吧。公园里有很多人在跳舞，还有小朋友在放风筝。"
           "我们走累了就坐在长椅上休息，一边喝茶一边聊天。"
           "如果明天不下雨的话，我们还可以去海边看日出，然后去市场买一些新鲜的水果和蔬菜。")


def test_a_chinese_segment_is_cut_at_full_stops_and_commas() -> None:
    cues = build_cues(transcript(segment(chars_of(CHINESE)), language="zh"))
    assert "".join(squash(c.text) for c in cues) == CHINESE
    assert all(" " not in c.text for c in cues)
    assert all(len(line) <= 16 for line in lines(cues))
    assert check_rules(cues) == []
    ends = [c.text[-1] for c in cues]
    assert all(end in "。，" for end in ends)
    assert "，" in ends[:-1] and "。" in ends[:-1]  # both kinds of cut are used
    assert cues[0].text == "今天天气很好，\n我们一起去公园散步吧。"  # a line breaks at the comma too


def test_chinese_with_a_latin_word_keeps_the_word_whole_and_unspaced_chinese() -> None:
    text = "我们今天用 Python 写了一个很长很长的程序，然后把它部署到服务器上面去运行了好几个小时"  # cjk.join's spacing
    pieces = ["我们", "今天", "用", "Python", "写", "了", "一个", "很长", "很长", "的", "程序，", "然后", "把", "它",
              "部署", "到", "服务器", "上面", "去", "运行", "了", "好几个", "小时"]
    words = [Word(p, k * 0.3, k * 0.3 + 0.25) for k, p in enumerate(pieces)]
    assert cjk.join(pieces) == text
    cues = build_cues(transcript(segment(words), language="zh"))
    assert "".join(squash(c.text) for c in cues) == squash(text)
    assert any("Python" in line for line in lines(cues))
    assert check_rules(cues) == []


def test_korean_is_cut_between_words() -> None:
    text = "안녕하세요 여러분 오늘은 날씨가 정말 좋네요 우리 같이 공원에 산책하러 갈까요"
    cues = build_cues(transcript(segment(words_of(text, per_char=0.15)), language="ko"))
    assert all(len(line) <= 16 for line in lines(cues))
    assert [w for c in cues for w in c.text.split()] == text.split()


def test_japanese_small_kana_and_long_vowel_marks_never_start_a_line() -> None:
    text = "ちょっとコーヒーを飲みに行きませんか。ジャンプしてキャッチしたらショックでした。"
    cues = build_cues(transcript(segment(chars_of(text)), language="ja"), StyleRules(max_line_width_cjk=5))
    assert "".join(squash(c.text) for c in cues) == text
    assert all(line[0] not in "ーっゃゅょッャュョ。" for line in lines(cues))


def test_two_short_sentences_share_a_line_but_a_long_cue_ends_at_the_sentence_end() -> None:
    short = build_cues(transcript(segment(words_of("Yes. No. Maybe."))))
    assert [c.text for c in short] == ["Yes. No. Maybe."]
    two = build_cues(transcript(segment(words_of("Hello there. How are you doing today, my old friend?"))))
    assert [c.text for c in two] == ["Hello there.\nHow are you doing today, my old friend?"]
    cut = build_cues(transcript(segment(words_of("Yes. I think that we should go to the store and buy some milk."))))
    assert [c.text for c in cut] == ["Yes.", "I think that we should go\nto the store and buy some milk."]


def test_abbreviations_do_not_end_sentences() -> None:
    cues = build_cues(transcript(segment(words_of("I met Mr. Smith and Dr. Jones at the station this morning."))))
    assert [c.text for c in cues] == ["I met Mr. Smith and Dr. Jones\nat the station this morning."]


def test_a_cue_never_mixes_speakers_within_a_segment() -> None:
    words = words_of("Are you coming?", speaker="SPEAKER_00") + words_of("Yes, I am.", 1.5, speaker="SPEAKER_01")
    cues = build_cues(transcript(segment(words, speaker="SPEAKER_00")))
    assert [(c.text, c.speaker) for c in cues] == [("Are you coming?", "SPEAKER_00"), ("Yes, I am.", "SPEAKER_01")]


def test_segments_are_never_merged() -> None:
    cues = build_cues(transcript(segment(words_of("Hello")), segment(words_of("there", 0.5))))
    assert [c.text for c in cues] == ["Hello", "there"]


# ---------------------------------------------------------------------------------------------- timing


def test_a_short_isolated_word_stays_short_when_the_next_cue_follows_at_once() -> None:
    cues = build_cues(transcript(segment([Word("Hi", 1.0, 1.3)]), segment([Word("there.", 1.3, 2.5)])))
    assert [(c.start, c.end) for c in cues] == [(1.0, 1.3), (1.3, 2.5)]
    assert check_rules(cues) == []


def test_a_short_word_is_held_for_the_minimum_duration_when_there_is_room() -> None:
    cues = build_cues(transcript(segment([Word("Hi", 1.0, 1.3)]), segment([Word("there.", 1.6, 3.0)])))
    assert [(c.start, c.end) for c in cues] == [(1.0, 1.6), (1.6, 3.0)]  # as long as the room allows
    cues = build_cues(transcript(segment([Word("Hi", 1.0, 1.3)]), segment([Word("there.", 5.0, 6.0)])))
    assert cues[0].end == pytest.approx(1.0 + defaults.SUBTITLE_MIN_CUE_DURATION)
    assert check_rules(cues) == []


def test_the_last_cue_is_held_no_later_than_the_end_of_the_speech() -> None:
    words = [Word("Go", 1.0, 1.2)]
    assert build_cues(transcript(Segment(1.0, 1.2, "Go", words)))[0].end == 1.2
    assert build_cues(transcript(Segment(1.0, 1.5, "Go", words)))[0].end == 1.5
    assert build_cues(transcript(Segment(1.0, 9.0, "Go", words)))[0].end == pytest.approx(1.0 + 5 / 6)


def test_the_minimum_gap_is_kept() -> None:
    rules = StyleRules(min_gap=0.1)
    cues = build_cues(transcript(segment(words_of("One. Two. " * 12, per_char=0.3, pause=0.0))), rules)
    assert len(cues) > 1
    assert all(b.start - a.end >= 0.1 - EPS for a, b in pairwise(cues))
    assert check_rules(cues, rules) == []


def test_a_long_segment_without_pauses_or_punctuation_is_cut_by_duration() -> None:
    words = words_of("go " * 40, per_char=0.5, pause=0.0)  # 40 words of 1 s: 7 fit in a cue
    cues = build_cues(transcript(segment(words)))
    assert sorted(len(c.text.split()) for c in cues) == [6, 6, 7, 7, 7, 7]  # as even as 40 words allow
    assert all(c.end - c.start <= 7.0 for c in cues)


def test_the_largest_pause_is_where_an_unpunctuated_segment_is_cut() -> None:
    first = words_of("so we went down to the old market by the river")
    second = words_of("and then we walked all the way back home again", first[-1].end + 1.2)
    cues = build_cues(transcript(segment(first + second)))
    assert [c.text.replace("\n", " ") for c in cues] == [" ".join(w.word for w in first),
                                                        " ".join(w.word for w in second)]


# ---------------------------------------------------------------------------------------------- the exception


def test_an_overlong_word_is_a_cue_of_its_own_on_one_line() -> None:
    long_word = "pneumonoultramicroscopicsilicovolcanoconiosis-related"
    cues = build_cues(transcript(segment(words_of(f"He said {long_word} twice."))))
    assert [c.text for c in cues] == ["He said", long_word, "twice."]
    assert check_rules(cues) == []  # the single unit is allowed to be too wide
    assert check_rules([Cue(0, 1, f"a {long_word}")]) != []  # two units are not


def test_a_word_held_longer_than_the_maximum_is_a_cue_of_its_own() -> None:
    words = [Word("Well,", 0.0, 0.4), Word("nooooo", 0.5, 9.0), Word("way.", 9.1, 9.5)]
    cues = build_cues(transcript(segment(words)))
    assert [c.text for c in cues] == ["Well,", "nooooo", "way."]
    assert check_rules(cues) == []
    assert check_rules([Cue(0.0, 9.5, "Well, nooooo")]) != []


# ---------------------------------------------------------------------------------------------- text and words


def test_the_cue_text_is_the_segment_text_even_where_a_word_was_left_untimed() -> None:
    words = [Word("In", 0.0, 0.2), Word("we", 1.0, 1.2), Word("left.", 1.3, 1.6)]  # "1990," has no time
    cues = build_cues(transcript(Segment(0.0, 1.6, "In 1990, we left.", words)))
    assert [(c.start, c.end, c.text) for c in cues] == [(0.0, 1.6, "In 1990, we left.")]


def test_a_segment_without_words_is_one_cue_over_the_segment_when_it_fits() -> None:
    cues = build_cues(transcript(Segment(2.0, 4.5, " Hello there. ", [])))
    assert cues == [Cue(2.0, 4.5, "Hello there.")]


def test_a_long_segment_without_words_is_cut_with_times_spread_over_its_characters() -> None:
    cues = build_cues(transcript(Segment(10.0, 40.0, DICKENS, [])))
    assert len(cues) >= 6
    assert cues[0].start == 10.0 and cues[-1].end == pytest.approx(40.0)
    assert check_rules(cues) == []
    assert " ".join(c.text.replace("\n", " ") for c in cues) == DICKENS


def test_a_space_the_model_wrote_between_chinese_characters_is_kept_and_is_a_place_to_cut() -> None:
    text = "今天天气很好我们一起去 公园散步吧明天再见"
    cues = build_cues(transcript(Segment(0.0, 5.0, text, chars_of(text.replace(" ", ""), each=0.2)), language="zh"))
    assert [c.text for c in cues] == ["今天天气很好我们一起去\n公园散步吧明天再见"]


def test_cues_per_segment_keeps_the_engines_segmentation() -> None:
    words = words_of(DICKENS)
    long = Segment(0.0, 30.0, DICKENS, words, "SPEAKER_00")
    assert cues_per_segment(transcript(long, Segment(0.5, 0.6, " hi ", []))) == [
        Cue(0.0, 30.0, DICKENS, "SPEAKER_00"), Cue(30.0, 30.0, "hi")]


# ---------------------------------------------------------------------------------------------- check_rules


@pytest.mark.parametrize(("cues", "fragment"), [
    ([Cue(0, 2, "one\ntwo\nthree")], "3 lines"),
    ([Cue(0, 2, "This line is far too long to be shown on a single line")], "too wide"),
    ([Cue(0, 2, "这一行字幕实在是太长了根本放不下十六个字")], "too wide"),
    ([Cue(0, 8, "Too long")], "lasts 8.000 s"),
    ([Cue(0, 2, "First"), Cue(1.5, 3, "second")], "starts less than"),
    ([Cue(0, 0.3, "Hi"), Cue(5, 6, "there")], "leaves room"),
    ([Cue(0, 2, "Yes. I think we should\ngo now.")], "a sentence ends inside line 1"),
    ([Cue(0, 2, " padded")], "spaces at a line's edge"),
    ([Cue(0, 2, "one\n\ntwo")], "blank line"),
    ([Cue(2, 1, "backwards")], "ends before it starts"),
    ([Cue(0, 1, "  ")], "empty"),
])
def test_check_rules_reports_each_kind_of_violation(cues: list[Cue], fragment: str) -> None:
    problems = check_rules(cues)
    assert any(fragment in p for p in problems), problems


def test_check_rules_accepts_good_cues() -> None:
    good = [Cue(0, 2, "Hello there.\nHow are you?"), Cue(2, 2.3, "Fine."),
            Cue(2.3, 3.0, "今天天气很好，\n我们去公园吧。")]
    assert check_rules(good) == []


def test_check_rules_measures_mixed_lines_by_script() -> None:
    assert check_rules([Cue(0, 1, "我们用Python写")]) == []  # 5 CJK + 6 Latin: well inside
    assert check_rules([Cue(0, 1, "a" * 42)]) == []
    assert check_rules([Cue(0, 1, "a" * 42 + " b")]) != []
    assert check_rules([Cue(0, 1, "字" * 16)]) == []
    assert check_rules([Cue(0, 1, "字" * 16 + "a")]) != []
    assert check_rules([Cue(0, 1, "안녕하세요 여러분 오늘은")]) == []  # 13 Hangul and 2 spaces
    assert check_rules([Cue(0, 1, "안녕하세요 여러분 오늘은 날씨가")]) != []  # 17 with the spaces


# ---------------------------------------------------------------------------------------------- rules and ordering


def test_style_rules_defaults_are_the_named_constants() -> None:
    assert (RULES.max_line_width_latin, RULES.max_line_width_cjk, RULES.max_lines) == (42, 16, 2)
    assert (RULES.max_cue_duration, RULES.min_gap) == (7.0, 0.0)
    assert RULES.min_cue_duration == pytest.approx(0.833, abs=1e-3)


@pytest.mark.parametrize("bad", [
    {"max_lines": 0}, {"max_line_width_cjk": 0}, {"min_cue_duration": 8.0}, {"max_cue_duration": 0.0},
    {"min_gap": -0.1}, {"min_cue_duration": -1.0},
])
def test_style_rules_refuse_impossible_numbers(bad: dict) -> None:
    with pytest.raises(ValueError):
        StyleRules(**bad)


def test_ordered_clips_to_the_minimum_gap() -> None:
    assert ordered([Cue(0, 2, "a"), Cue(1, 3, "b")], min_gap=0.5) == [Cue(0, 2, "a"), Cue(2.5, 3, "b")]
