"""A pyannote speaker-diarization pipeline that needs no weights: it splits the file at its midpoint.

What it stands in for: ``pyannote/speaker-diarization-community-1`` (a gated hub pipeline), which
klipnote loads for ``submit --diarize`` through ``whisperx.diarize.DiarizationPipeline``. No model
hub is reachable from build or CI machines, so the real pipeline cannot be loaded there.

How pyannote loads it: ``tests/standins/halves-pipeline/config.yaml`` names this class under
``pipeline: name:``. With ``KLIPNOTE_DIARIZATION_MODEL`` set to that folder, klipnote's real path
runs: ``DiarizationPipeline(model_name=<folder>)`` calls ``Pipeline.from_pretrained(<folder>)``,
which (the path being a directory) reads ``<folder>/config.yaml``, imports the class by its dotted
name, calls it with the config's ``pipeline: params:`` plus ``token`` and ``cache_dir``, and
DiarizationPipeline moves it ``.to(device)``. ``DiarizationPipeline.__call__`` then calls it on
``{"waveform": (1, time) tensor, "sample_rate": 16000}`` (pyannote's ``Pipeline.__call__`` validates
the file and calls :meth:`HalvesDiarization.apply`), reads ``output.speaker_diarization`` (a
:class:`pyannote.core.Annotation`) as it does with pyannote.audio 4's own pipeline, and turns it
into the turns table that ``whisperx.assign_word_speakers`` uses. The worker process must be able
to import ``tests.standins`` (the repository root on ``PYTHONPATH``).

What it does: the turns of :func:`tests.standins.halves.turns`, whatever the speaker-count hints.
It returns pyannote's own :class:`DiarizeOutput` (no embeddings, as whisperx does not ask for them).
With ``HALVES_HINTS_LOG`` set to a file, it appends to it, one JSON line per call, the speaker-count
hints pyannote handed it (``num_speakers``, ``min_speakers``, ``max_speakers``), so that a test sees
``submit --speakers`` arrive.

What it does not verify: how accurate a real pyannote model is (segmentation, speaker embeddings,
clustering, overlapped speech), loading its weights, gated-model tokens, or speed on a real device.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pyannote.audio import Audio, Pipeline
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.core import Annotation, Segment

from .halves import HINTS_LOG, SPEAKERS, turns


class HalvesDiarization(Pipeline):
    """``SPEAKER_00`` speaks the first half of the file, ``SPEAKER_01`` the second."""

    def __init__(self, token: str | None = None, cache_dir: str | None = None) -> None:
        # from_pretrained always passes token and cache_dir; there is nothing to download.
        super().__init__()

    def default_parameters(self) -> dict[str, Any]:
        return {}

    def classes(self) -> list[str]:
        return list(SPEAKERS)

    def apply(self, file: dict, num_speakers: int | None = None, min_speakers: int | None = None,
              max_speakers: int | None = None, hook: Any = None) -> DiarizeOutput:
        if os.environ.get(HINTS_LOG):
            with open(os.environ[HINTS_LOG], "a", encoding="utf-8") as log:
                log.write(json.dumps({"num_speakers": num_speakers, "min_speakers": min_speakers,
                                      "max_speakers": max_speakers}) + "\n")
        annotation = Annotation(uri=file.get("uri"))
        for start, end, speaker in turns(Audio().get_duration(file)):
            annotation[Segment(start, end)] = speaker
        return DiarizeOutput(speaker_diarization=annotation, exclusive_speaker_diarization=annotation.copy())
