// klipnote review page: play from a cue or word, follow playback, search, edit cues, download SRT/VTT/TXT.
// Inline in every page and allowed by the page's CSP by its hash. Transcript text only ever enters the
// page as textContent or a textarea's value, never as markup; nothing is sent anywhere.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("klipnote-data").textContent);
  const audio = document.getElementById("player");
  const rows = Array.from(document.querySelectorAll("#cues > li.cue"));
  const texts = data.cues.map((cue) => cue.text); // the text each cue has now, edits included
  const search = document.getElementById("search");
  const playhead = document.getElementById("playhead");
  const timeline = document.getElementById("timeline");
  // Scripts written without spaces between words: lines of an edited cue join without one.
  const UNSPACED = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]/u;
  let current = -1;
  let word = null;

  useEmbeddedAudio();

  /** The embedded Opus copy, if the page carries one, becomes a blob: URL for the player. */
  function useEmbeddedAudio() {
    const block = document.getElementById("klipnote-audio");
    if (!block) return;
    const bytes = Uint8Array.from(atob(block.textContent.trim()), (c) => c.charCodeAt(0));
    audio.src = URL.createObjectURL(new Blob([bytes], { type: block.dataset.type }));
  }

  function seek(seconds, play) {
    audio.currentTime = seconds;
    update();
    if (play) audio.play().catch(() => {});
  }

  /** Index of the last cue starting at or before t (-1 before the first). */
  function lastStarted(t) {
    let lo = 0;
    let hi = data.cues.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (data.cues[mid].start <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  /** Highlight the cue and the word being played, and keep the cue in view. */
  function update() {
    const t = audio.currentTime;
    const i = lastStarted(t);
    const now = i >= 0 && t < data.cues[i].end ? i : -1;
    if (now !== current) {
      if (current >= 0) rows[current].classList.remove("current");
      current = now;
      if (current >= 0) {
        rows[current].classList.add("current");
        if (!rows[current].contains(document.activeElement)) rows[current].scrollIntoView({ block: "nearest" });
      }
    }
    const spans = current >= 0 ? rows[current].querySelectorAll(".w") : [];
    let next = null;
    for (const span of spans) if (Number(span.dataset.s) <= t) next = span;
    if (next !== word) {
      if (word) word.classList.remove("now");
      word = next;
      if (word) word.classList.add("now");
    }
    if (playhead && data.duration) playhead.setAttribute("x", String(Math.min(t, data.duration)));
  }

  function follow() {
    update();
    if (!audio.paused) requestAnimationFrame(follow);
  }

  function visible(i) { return !rows[i].hidden; }

  /** The next (step 1) or previous (step -1) shown cue from where playback is. */
  function step(direction) {
    const t = audio.currentTime;
    let i = lastStarted(direction > 0 ? t + 0.05 : t - 0.5);
    i = direction > 0 ? i + 1 : Math.max(i, 0);
    while (i >= 0 && i < rows.length && !visible(i)) i += direction;
    if (i >= 0 && i < rows.length) seek(data.cues[i].start, !audio.paused);
  }

  // ------------------------------------------------------------------ editing

  /** Subtitle lines as a reader types them: trimmed, no blank line (it would end an SRT cue). */
  function lines(text) {
    return text.split("\n").map((line) => line.trim()).filter((line) => line);
  }

  /** One line, the way its script expects: no space between Chinese or Japanese characters. */
  function flat(text) {
    return lines(text).reduce((out, line) =>
      out && !(UNSPACED.test(out.slice(-1)) && UNSPACED.test(line[0])) ? `${out} ${line}` : out + line, "");
  }

  function edit(i) {
    const row = rows[i];
    if (row.querySelector("textarea")) return;
    const shown = row.querySelector(".text");
    const box = document.createElement("textarea");
    box.value = texts[i];
    box.rows = Math.max(2, lines(texts[i]).length);
    box.setAttribute("aria-label", "Cue text");
    shown.hidden = true;
    shown.after(box);
    box.focus();
    let done = false;
    const finish = (keep) => {
      if (done) return;
      done = true;
      if (keep) setText(i, box.value);
      box.remove();
      shown.hidden = false;
    };
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") finish(false);
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) finish(true);
      event.stopPropagation();
    });
    box.addEventListener("blur", () => finish(true));
  }

  function setText(i, value) {
    const text = lines(value).join("\n");
    if (text === texts[i]) return;
    texts[i] = text;
    const row = rows[i];
    row.classList.toggle("edited", text !== data.cues[i].text);
    row.querySelector(".text").textContent = flat(text);
  }

  // ------------------------------------------------------------------ downloads

  function kept() {
    return data.cues.map((cue, i) => i).filter((i) => texts[i]);
  }

  function subtitle(i) {
    const speaker = data.cues[i].speaker;
    return speaker ? `[${speaker}] ${texts[i]}` : texts[i];
  }

  const EXPORTS = {
    srt: ["application/x-subrip", () => kept().map((i, n) =>
      `${n + 1}\n${data.cues[i].srt[0]} --> ${data.cues[i].srt[1]}\n${subtitle(i)}\n`).join("\n")],
    vtt: ["text/vtt", () => "WEBVTT\n\n" + kept().map((i) =>
      `${data.cues[i].vtt[0]} --> ${data.cues[i].vtt[1]}\n${subtitle(i).replaceAll("-->", "->")}\n`).join("\n")],
    txt: ["text/plain", () => kept().map((i) => `${flat(texts[i])}\n`).join("")],
  };

  function download(format) {
    const [type, make] = EXPORTS[format];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([make()], { type: `${type};charset=utf-8` }));
    link.download = `${data.stem}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  // ------------------------------------------------------------------ search

  function filter() {
    const query = search.value.trim().toLocaleLowerCase();
    let count = 0;
    rows.forEach((row, i) => {
      const match = !query || `${data.cues[i].speaker || ""} ${texts[i]} ${flat(texts[i])}`
        .toLocaleLowerCase().includes(query);
      row.hidden = !match;
      if (match) count += 1;
    });
    document.getElementById("found").textContent = query ? `${count} of ${rows.length} cues` : "";
  }

  // ------------------------------------------------------------------ events

  document.getElementById("cues").addEventListener("click", (event) => {
    const row = event.target.closest("li.cue");
    if (!row || event.target.closest("textarea")) return;
    const i = Number(row.dataset.i);
    if (event.target.closest(".edit")) { edit(i); return; }
    const span = event.target.closest(".w");
    seek(span ? Number(span.dataset.s) : data.cues[i].start, true);
  });

  timeline.addEventListener("click", (event) => {
    const box = timeline.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * data.duration, true);
  });

  document.querySelectorAll("[data-download]").forEach((button) =>
    button.addEventListener("click", () => download(button.dataset.download)));

  search.addEventListener("input", filter);
  search.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { search.value = ""; filter(); search.blur(); }
    if (event.key === "Enter") step(1);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = {
      " ": () => (audio.paused ? audio.play().catch(() => {}) : audio.pause()),
      k: () => (audio.paused ? audio.play().catch(() => {}) : audio.pause()),
      ArrowUp: () => step(-1), p: () => step(-1),
      ArrowDown: () => step(1), n: () => step(1),
      e: () => { if (current >= 0) edit(current); },
      "/": () => search.focus(),
    };
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
  });

  audio.addEventListener("play", follow);
  audio.addEventListener("seeked", update);
  audio.addEventListener("timeupdate", update);
  window.addEventListener("beforeunload", (event) => {
    if (rows.some((row) => row.classList.contains("edited"))) event.preventDefault();
  });
})();
