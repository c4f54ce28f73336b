"""The review page (``--format html``) in a real browser: Debian's chromium, driven by Playwright's client.

The browser is the system's (scripts/bootstrap installs it); ``playwright install`` is never needed.
Pages made here from hand-built transcripts play the real jfk.flac beside them; the end-to-end test
at the bottom opens the pages a real whisperx worker wrote for corpus files.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from klipnote import review, writers
from klipnote.job import OutputFormat
from klipnote.subtitles import Cue, build_cues
from klipnote.transcript import Segment, Transcript, Word, WordTiming

from .support.e2ekit import WHISPERX_WORKER, cli, submit, worker_env

playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")

HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> & <b>bold</b>'


def _words(text: str, start: float, step: float, scores: dict[int, float] | None = None) -> list[Word]:
    return [Word(w, start + i * step, start + (i + 1) * step, (scores or {}).get(i, 0.9))
            for i, w in enumerate(text.split())]


def jfk_transcript() -> Transcript:
    """Three timed segments of the JFK quote, one word the model was unsure of."""
    parts = [("And so, my fellow Americans,", 0.3), ("ask not what your country can do for you,", 3.2),
             ("ask what you can do for your country.", 7.7)]
    segments = []
    for text, start in parts:
        words = _words(text, start, 0.3, {1: 0.2} if start > 7 else None)
        segments.append(Segment(start, words[-1].end, text, words))
    return Transcript(segments, "en", 0.98, WordTiming.CROSS_ATTENTION)


def write_page(folder: Path, transcript: Transcript, corpus: Path, *, name: str = "jfk.flac",
               cues: list[Cue] | None = None) -> Path:
    """The page as the worker writes it beside its input, the real recording next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(corpus / "jfk.flac", folder / "jfk.flac")
    meta = {"input": {"name": name, "duration": 11.0}, "engine": "whisperx", "model": "base-offline",
            "routing": {"reason": "detected en"}, "job": "01testjob"}
    audio = review.Audio(review.sources(folder, [folder / "jfk.flac"]))
    pages = writers.render(transcript, (OutputFormat.HTML,), meta, cues, audio=audio)
    page = folder / "transcript.html"
    page.write_text(pages["transcript.html"], encoding="utf-8")
    return page


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed; scripts/bootstrap installs it (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--mute-audio"])
        yield launched
        launched.close()


class Opened:
    """A page open in the browser, with every request and script error it caused."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 700})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(path.as_uri())

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def wait_until(self, expression: str, timeout: float = 10.0) -> None:
        """Poll from outside the page: Playwright's own wait_for_function evaluates strings, which the CSP forbids."""
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
            time.sleep(0.05)

    def loaded(self) -> None:
        """Wait until the player knows the recording's duration (it found the file)."""
        self.wait_until("document.getElementById('player').readyState >= 1")

    def download(self, fmt: str) -> str:
        with self.page.expect_download() as info:
            self.page.click(f"[data-download={fmt}]")
        return Path(info.value.path()).read_text(encoding="utf-8")


@pytest.fixture
def opened(browser) -> Iterator:
    pages: list[Opened] = []

    def open_page(path: Path) -> Opened:
        pages.append(Opened(browser, path))
        return pages[-1]

    yield open_page
    for page in pages:
        page.context.close()


# ---------------------------------------------------------------------- safety


def test_a_hostile_transcript_runs_no_script_and_shows_as_text(tmp_path, corpus, opened):
    words = _words("ask not", 0.5, 0.3)
    hostile = Transcript([Segment(0.5, 2.0, HOSTILE, [], speaker=HOSTILE), Segment(3.0, 3.6, "ask not", words)],
                         "en\"><script>window.pwned=3</script>")
    page = opened(write_page(tmp_path, hostile, corpus, name='"><script>window.pwned=4</script>.wav'))
    assert page.js("typeof window.pwned") == "undefined"
    assert page.js("document.querySelectorAll('img, b, #cues script').length") == 0
    assert HOSTILE in page.page.inner_text("#cues")
    assert "<script>window.pwned=4</script>" in page.page.inner_text("h1")
    assert page.errors == []


def test_a_script_that_escaping_missed_would_still_be_blocked_by_the_policy(tmp_path, corpus, opened):
    """The CSP allows the page's own script by its hash: any other inline script is refused."""
    path = write_page(tmp_path, jfk_transcript(), corpus)
    path.write_text(path.read_text().replace("</main>", "<script>window.pwned = 5</script></main>"))
    page = opened(path)
    assert page.js("typeof window.pwned") == "undefined"
    assert page.js("document.querySelectorAll('li.cue').length") == 3  # the page's own script ran


def test_the_page_makes_no_network_request(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.loaded()
    page.page.click("li.cue >> nth=1")
    page.page.wait_for_timeout(300)
    assert page.requests, "the page and its recording are requests too"
    assert {url.split(":", 1)[0] for url in page.requests} <= {"file", "blob"}, page.requests
    assert page.errors == []


# ---------------------------------------------------------------------- playing


def test_clicking_a_cue_or_a_word_plays_from_there(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.loaded()
    page.page.click("li.cue >> nth=2 >> .time")
    assert page.js("document.getElementById('player').currentTime") == pytest.approx(7.7, abs=0.3)
    page.page.click("li.cue >> nth=1 >> .w >> nth=3")  # "your"
    assert page.js("document.getElementById('player').currentTime") == pytest.approx(3.2 + 3 * 0.3, abs=0.3)


def test_playing_moves_the_highlight_to_the_cue_and_word_being_heard(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.loaded()
    page.page.click("li.cue >> nth=0 >> .w >> nth=-1")  # the first cue's last word: the next cue is near
    page.wait_until("document.getElementById('player').currentTime > 3.5")
    assert page.js("[...document.querySelectorAll('li.cue')].map(r => r.classList.contains('current'))") == \
        [False, True, False]
    assert page.js("document.querySelector('li.cue.current .w.now').textContent") in {"ask", "not", "what"}


def test_keys_step_between_cues_and_search_filters_them(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.loaded()
    at = "document.getElementById('player').currentTime"
    page.page.keyboard.press("n")
    assert page.js(at) == pytest.approx(0.3, abs=0.05)  # before the first cue: next is the first
    page.page.keyboard.press("ArrowDown")
    assert page.js(at) == pytest.approx(3.2, abs=0.05)
    page.page.keyboard.press("n")
    page.page.keyboard.press("p")
    assert page.js(at) == pytest.approx(3.2, abs=0.05)
    page.page.keyboard.press("/")
    page.page.keyboard.type("Americans")
    assert page.js("[...document.querySelectorAll('li.cue')].map(r => r.hidden)") == [False, True, True]
    assert page.page.inner_text("#found") == "1 of 3 cues"


# ---------------------------------------------------------------------- editing and downloads


def test_downloads_of_an_unedited_page_match_the_worker_s_files(tmp_path, corpus, opened):
    transcript = jfk_transcript()
    page = opened(write_page(tmp_path, transcript, corpus))
    written = writers.render(transcript, (OutputFormat.SRT, OutputFormat.VTT), {})
    assert page.download("srt") == written["transcript.srt"]
    assert page.download("vtt") == written["transcript.vtt"]


def test_an_edit_shows_up_in_the_downloaded_srt_vtt_and_txt(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.page.click("li.cue >> nth=1 >> .edit")
    page.page.fill("li.cue >> nth=1 >> textarea", "ask not what your country\ncan do --> for you")
    page.page.keyboard.press("Control+Enter")
    assert "edited" in page.page.get_attribute("li.cue >> nth=1", "class")
    assert page.page.inner_text("li.cue >> nth=1 >> .text").startswith("ask not what your country can do")
    srt = page.download("srt")
    assert "2\n00:00:03,200 --> " in srt
    assert "ask not what your country\ncan do --> for you\n" in srt
    assert srt.startswith("1\n00:00:00,300 --> 00:00:01,800\nAnd so, my fellow Americans,\n\n2\n")
    assert srt.endswith("ask what you can do for your country.\n")
    assert "can do -> for you\n" in page.download("vtt")
    assert page.download("txt").splitlines()[1] == "ask not what your country can do --> for you"


def test_an_emptied_cue_is_left_out_of_the_downloads(tmp_path, corpus, opened):
    page = opened(write_page(tmp_path, jfk_transcript(), corpus))
    page.page.click("li.cue >> nth=0 >> .edit")
    page.page.fill("li.cue >> nth=0 >> textarea", "  \n ")
    page.page.keyboard.press("Control+Enter")
    srt = page.download("srt")
    assert srt.startswith("1\n00:00:03,200 --> ") and "\n2\n00:00:07,700 --> " in srt


# ---------------------------------------------------------------------- what it shows


def test_speakers_get_distinct_colours_and_unsure_words_are_marked(tmp_path, corpus, opened):
    transcript = jfk_transcript()
    for segment, speaker in zip(transcript.segments, ("SPEAKER_00", "SPEAKER_01", "SPEAKER_00"), strict=True):
        segment.speaker = speaker
    cues = [Cue(s.start, s.end, s.text, s.speaker) for s in transcript.segments]
    page = opened(write_page(tmp_path, transcript, corpus, cues=cues))
    colours = page.js("[...document.querySelectorAll('li.cue .speaker')].map(s => getComputedStyle(s).color)")
    assert colours[0] == colours[2] != colours[1]
    assert page.js("[...document.querySelectorAll('.w.low')].map(w => w.textContent)") == ["what"]
    assert page.js("document.querySelectorAll('#timeline rect.speech').length") == 3
    assert page.js("document.querySelectorAll('#timeline rect.unsure').length") == 1
    facts = page.page.inner_text(".facts")
    assert "en (p = 0.98)" in facts and "whisperx" in facts and "detected en" in facts


def test_mandarin_reads_without_inserted_spaces_in_a_cjk_font(tmp_path, corpus, opened):
    chars = list("开放时间早上9点至下午5点。")
    words = [Word(c, 0.5 + i * 0.3, 0.8 + i * 0.3, 0.9) for i, c in enumerate(chars)]
    transcript = Transcript([Segment(0.5, words[-1].end, "".join(chars), words)], "zh", 0.99)
    page = opened(write_page(tmp_path, transcript, corpus, name="zh.wav"))
    assert page.page.inner_text("li.cue .text") == "开放时间早上9点至下午5点。"
    session = page.context.new_cdp_session(page.page)
    session.send("DOM.enable")
    session.send("CSS.enable")
    root = session.send("DOM.getDocument")["root"]["nodeId"]
    node = session.send("DOM.querySelector", {"nodeId": root, "selector": "li.cue .text"})["nodeId"]
    fonts = session.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cjk_glyphs = sum(f["glyphCount"] for f in fonts if "CJK" in f["familyName"])
    assert cjk_glyphs >= 12, fonts  # every Chinese character drawn by a CJK font, none as a missing glyph


# ---------------------------------------------------------------------- embedded audio


def test_an_embedded_opus_copy_plays_without_the_file_beside_it(tmp_path, corpus, opened):
    result = writers.result(jfk_transcript(), build_cues(jfk_transcript()), {"input": {"name": "jfk.flac"}})
    path = tmp_path / "alone.html"
    path.write_text(review.page(result, review.embed(corpus / "jfk.flac", 11.0)), encoding="utf-8")
    assert path.stat().st_size < 80_000  # 11 s of speech at 24 kbit/s, in base64
    page = opened(path)
    page.loaded()
    assert page.js("document.getElementById('player').duration") == pytest.approx(11.0, abs=0.1)
    assert {url.split(":", 1)[0] for url in page.requests} == {"file", "blob"}


def test_embedding_past_the_limit_says_so_before_encoding(corpus):
    message = r"would be 20.6 MiB, over the 1.0 MiB limit .* next to the recording"
    with pytest.raises(review.EmbedTooLarge, match=message):
        review.embed(corpus / "jfk.flac", 7200.0, limit=1024**2)


def test_a_recording_without_speech_gets_a_page_that_says_so():
    silent = writers.render(Transcript([], None), (OutputFormat.HTML,), {"input": {"name": "noise.wav"}})
    page = silent["transcript.html"]
    assert "No speech was found in this recording." in page and 'class="cue' not in page


# ---------------------------------------------------------------------- a real job, end to end


@pytest.mark.slow
def test_a_real_job_s_page_beside_its_input_plays_it(tmp_path, corpus, model_cache, opened):
    """A whisperx worker on the Whisper base model writes the page in the job folder, beside the input and in
    --output-dir, each playing the recording from where it sits."""
    env = worker_env(model_cache, tmp_path / "home")
    spool, inbox = tmp_path / "spool", tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(corpus / "jfk.flac", inbox / "jfk.flac")
    job_id = submit(spool, inbox / "jfk.flac", "-f", "html", "--next-to-input", "-o", str(tmp_path / "out"), env=env)
    worker = cli(spool, *WHISPERX_WORKER, "--drain", env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]

    for path in (inbox / "jfk.html", tmp_path / "out" / "jfk.html", spool / "jobs" / job_id / "transcript.html"):
        page = opened(path)
        page.loaded()
        assert "fellow Americans" in page.page.inner_text("#cues")
        page.page.click("li.cue >> nth=-1 >> .time")
        start = page.js("JSON.parse(document.getElementById('klipnote-data').textContent).cues.at(-1).start")
        assert page.js("document.getElementById('player').currentTime") == pytest.approx(start, abs=0.3)
        assert {url.split(":", 1)[0] for url in page.requests} == {"file"}
    assert '<source src="jfk.flac">' in (inbox / "jfk.html").read_text()
    assert '<source src="../inbox/jfk.flac">' in (tmp_path / "out" / "jfk.html").read_text()
    assert '<source src="input.flac">' in (spool / "jobs" / job_id / "transcript.html").read_text()

    printed = cli(spool, "result", job_id, "-f", "html", env=env)
    assert printed.returncode == 0 and "fellow Americans" in printed.stdout
    embedded = cli(spool, "result", job_id, "-f", "html", "--embed-audio", env=env)
    assert embedded.returncode == 0 and 'id="klipnote-audio" data-type="audio/ogg"' in embedded.stdout

