"""Local stand-ins for models that tests cannot download (no model hub is reachable here).

``halves`` holds the stand-in diarization's rule and imports nothing heavy, so tests can read it
at collection time; ``diarization`` is the pyannote pipeline class itself, imported only by
``pyannote.audio.Pipeline.from_pretrained`` inside a worker.
"""
