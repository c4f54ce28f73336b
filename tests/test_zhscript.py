"""Chinese script of a transcript: which script a job gets, and the conversion of text and words (real OpenCC)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opencc import OpenCC

from klipnote.job import ZhScript
from klipnote.transcript import Segment, Transcript, Word
from klipnote.zhscript import choose, convert

S, T, KEEP = ZhScript.SIMPLIFIED, ZhScript.TRADITIONAL, ZhScript.ORIGINAL
#: What each script's text is once converted again: unchanged (one dictionary load each, for the test module).
AGAIN = {S: OpenCC("t2s").convert, T: OpenCC("s2t").convert}


@pytest.mark.parametrize(
    ("asked", "hint", "default", "language", "script"),
    [
        (None, None, S, "zh", S),  # the worker's default
        (None, "zh", T, "zh", T),
        (None, "zh-TW", S, "zh", T),  # a Traditional hint
        (None, " ZH_hant ", S, "zh", T),
        (None, "zh-HK", S, "zh", T),
        (None, "zh-CN", T, "zh", T),  # a Simplified hint does not override a Traditional worker
        (S, "zh-TW", T, "zh", S),  # the job's own choice wins over its hint
        (KEEP, "zh-TW", S, "zh", KEEP),
        (None, None, S, "yue", KEEP),  # Cantonese is left alone ...
        (None, "zh-HK", S, "yue", KEEP),
        (T, None, S, "yue", T),  # ... unless the job asks
        (T, "zh-TW", S, "en", KEEP),  # not Chinese: nothing to convert
        (None, None, S, None, KEEP),
    ],
)
def test_the_jobs_choice_then_a_traditional_hint_then_the_workers_default(asked, hint, default, language, script):
    assert choose(asked, hint, default, language) is script


def transcript(*segments: list[str]) -> Transcript:
    """One segment per list of words; each segment's text is its words joined."""
    return Transcript([Segment(i, i + 1.0, "".join(words), [Word(w, i, i + 1.0) for w in words])
                       for i, words in enumerate(segments)], "zh")


def test_a_mixed_script_transcript_comes_out_in_one_script_text_and_words_alike():
    # Whisper base on a long Mandarin file: one segment in each script.
    mixed = transcript(list("开放时间早上9点"), list("太棒時間早上9點"))
    convert(mixed, S)
    assert [s.text for s in mixed.segments] == ["开放时间早上9点", "太棒时间早上9点"]
    assert ["".join(w.word for w in s.words) for s in mixed.segments] == [s.text for s in mixed.segments]

    convert(mixed, T)
    assert [s.text for s in mixed.segments] == ["開放時間早上9點", "太棒時間早上9點"]


def test_words_are_converted_in_their_phrase_not_one_character_alone():
    # 发 alone is 發 (to send); in 头发 (hair) it is 髮. Word timing gives one word per character.
    hair = transcript(["理", "发", "店", "里", "头", "发"])
    convert(hair, T)
    assert hair.segments[0].text == "理髮店裏頭髮"
    assert [w.word for w in hair.segments[0].words] == list("理髮店裏頭髮")


def test_original_leaves_the_models_characters_alone():
    kept = transcript(list("太棒時間早上9點"))
    convert(kept, KEEP)
    assert kept.segments[0].text == "太棒時間早上9點"


HANZI = st.text(alphabet=st.sampled_from("开放時間早上九点點头頭发髮后後里裏干乾面麵 ,。9"), min_size=1, max_size=6)


@settings(deadline=None)  # the first example loads OpenCC's dictionaries
@given(st.lists(st.lists(HANZI, min_size=1, max_size=8), min_size=1, max_size=4), st.sampled_from([S, T]))
def test_conversion_keeps_each_words_length_and_the_text_equal_to_its_words(segments, script):
    text = transcript(*segments)
    convert(text, script)
    for segment, words in zip(text.segments, segments, strict=True):
        assert [len(w.word) for w in segment.words] == [len(w) for w in words]
        assert "".join(w.word for w in segment.words) == segment.text
        assert AGAIN[script](segment.text) == segment.text  # already all in the script asked for
