"""Fast tests of the small pure pieces: ids, routing, atomic files, media probing, windows."""

from __future__ import annotations

import os
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klipnote import envcheck
from klipnote.errors import InputRejected, UsageError
from klipnote.fsio import atomic_write_bytes
from klipnote.ids import ALPHABET, ID_LENGTH, check_prefix, is_job_id, new_job_id
from klipnote.job import Lane, Model
from klipnote.media import NotMedia, probe
from klipnote.routing import MANDARIN_HINTS, route_at_submit
from klipnote.windows import MAX_WINDOW, Span, pack

# ---------------------------------------------------------------------- ids

millis = st.integers(min_value=0, max_value=2**48 - 1)


@given(millis, millis)
def test_ids_sort_in_submit_time_order(a, b):
    first, second = new_job_id(a), new_job_id(b)
    assert is_job_id(first) and is_job_id(second)
    if a < b:
        assert first < second


def test_ids_made_in_the_same_millisecond_differ():
    assert len({new_job_id(1_700_000_000_000) for _ in range(1000)}) == 1000


@given(st.text())
def test_only_id_characters_pass_as_a_prefix(text):
    try:
        prefix = check_prefix(text)
    except UsageError:
        return
    assert set(prefix) <= set(ALPHABET) and 1 <= len(prefix) <= ID_LENGTH
    assert "/" not in prefix and "." not in prefix


# ---------------------------------------------------------------------- routing


@pytest.mark.parametrize("hint", sorted(MANDARIN_HINTS | {"ZH_CN", "Zh-Hant", " cmn "}))
def test_every_mandarin_hint_routes_to_belle2(hint):
    assert route_at_submit(Model.AUTO, hint).lane is Lane.BELLE2


@pytest.mark.parametrize(
    ("model", "hint", "lane"),
    [
        (Model.AUTO, None, Lane.AUTO),
        (Model.AUTO, "de", Lane.WHISPERX),
        (Model.AUTO, "zh-yue", Lane.WHISPERX),
        (Model.WHISPERX, "zh", Lane.WHISPERX),
        (Model.BELLE2, "en", Lane.BELLE2),
    ],
)
def test_forced_models_bypass_routing_and_other_hints_stay_on_whisperx(model, hint, lane):
    route = route_at_submit(model, hint)
    assert route.lane is lane and route.reason


# ---------------------------------------------------------------------- files and media


def test_an_atomic_write_that_fails_midway_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    atomic_write_bytes(target, b"old")

    def broken_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["status.json"]


def test_probe_reads_real_media_and_rejects_what_is_not(media, corpus, tmp_path):
    jfk = probe(corpus / "jfk.flac")
    assert jfk.duration == pytest.approx(11.0, abs=0.1) and not jfk.has_video
    assert probe(media["mp4"]).has_video
    with pytest.raises(NotMedia, match="no audio stream"):
        probe(media["video_only"])
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(InputRejected, match="not a readable audio or video file"):
        probe(text)


# ---------------------------------------------------------------------- decoding windows

spans = st.lists(st.tuples(st.floats(0, 3600), st.floats(0.01, 90)), max_size=40).map(
    lambda pairs: [Span(start, start + length) for start, length in pairs])


@given(spans)
def test_windows_cover_all_speech_in_order_and_never_exceed_30_s(speech):
    windows = pack(speech)
    assert all(0 < w.length <= MAX_WINDOW + 1e-9 for w in windows)
    assert all(a.end <= b.start for a, b in pairwise(windows))
    for region in speech:  # every instant of speech lies in some window
        covered = sorted((max(w.start, region.start), min(w.end, region.end)) for w in windows
                         if w.end > region.start and w.start < region.end)
        reach = region.start
        for lo, hi in covered:
            assert lo <= reach + 1e-6
            reach = max(reach, hi)
        assert reach >= region.end - 1e-6


def test_close_regions_share_a_window_and_a_long_one_is_split_evenly():
    assert pack([Span(0, 5), Span(6, 10), Span(40, 45)]) == [Span(0, 10), Span(40, 45)]
    assert pack([Span(0, 70)]) == [Span(0, 70 / 3), Span(70 / 3, 140 / 3), Span(140 / 3, 70)]


def test_gpu_selection_follows_nvidia_smi_numbering_unless_an_order_is_set(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envcheck.select_gpu(None)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "CUDA_DEVICE_ORDER" not in os.environ
    envcheck.select_gpu(1)
    assert (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    envcheck.select_gpu(0)
    assert (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["CUDA_DEVICE_ORDER"]) == ("0", "FASTEST_FIRST")


def test_alignment_passes_are_grouped_in_order_up_to_a_token_budget():
    from klipnote.engines.belle2_engine import Pass, _by_rows

    passes = [Pass(0, 0, 1500, [(0.0, 1.0, list(range(n)))]) for n in (300, 200, 100, 600, 10)]
    groups = _by_rows(passes, 512)
    assert [[len(p.tokens) for p in group] for group in groups] == [[300, 200], [100], [600], [10]]
    assert [p for group in groups for p in group] == passes
