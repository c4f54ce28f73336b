"""Every default in one place, named, so that config, CLI help and docs agree."""

from __future__ import annotations

#: Format of the spool directory; a spool written with another format is refused.
SPOOL_FORMAT = 1

#: Largest input accepted at submit (bytes). Original service name: MAX_FILE_SIZE.
MAX_FILE_SIZE = 2 * 1024**3
#: Longest input accepted at submit (hours). Original service name: MAX_DURATION_HOURS.
MAX_DURATION_HOURS = 2.0

#: Model a job asks for when the user does not say (auto routes by language).
DEFAULT_MODEL = "auto"
#: What Whisper makes of a job's speech when the user does not say: transcribe (the language spoken) or
#: translate (into English, whisperx only).
TASK = "transcribe"

#: How often a worker proves it is alive while it holds a job (seconds).
HEARTBEAT_INTERVAL = 5.0
#: A claim whose heartbeat is older than this is presumed dead, whichever host holds it (seconds).
LEASE_TTL = 60.0
#: Claims a job may use before it fails for good (a worker dying on it counts as one).
MAX_ATTEMPTS = 3

#: Priority range accepted by ``submit --priority``; higher runs first.
PRIORITY_MIN = -9
PRIORITY_MAX = 9
PRIORITY_DEFAULT = 0

#: How long a command waits for another process's short critical section on one job (seconds).
STATE_LOCK_TIMEOUT = 30.0
#: Status writes for progress are spaced at least this far apart (seconds).
PROGRESS_MIN_INTERVAL = 0.5
#: A staging folder or orphan ticket older than this is left over from a crash (seconds).
STALE_STAGING_AGE = 3600.0

#: Retention used by ``klipnote gc`` when no --older-than is given.
GC_OLDER_THAN = "30d"

#: ``klipnote list`` shows this many jobs unless told otherwise (0 = all).
LIST_LIMIT = 50
#: ``klipnote wait`` polls the spool this often (seconds).
WAIT_POLL_INTERVAL = 0.5

#: Whisper model of the whisperx engine: a name whisperx knows, a local CTranslate2 folder, or an
#: offline model shipped on PyPI (``base-offline``). Original service name: WHISPER_MODEL.
WHISPER_MODEL = "large-v2"
#: ``auto`` picks cuda when torch sees a GPU, else cpu. Original service name: WHISPER_DEVICE.
DEVICE = "auto"
#: ``auto`` picks float16 on cuda and int8 on cpu. Original service name: WHISPER_COMPUTE_TYPE.
COMPUTE_TYPE = "auto"
#: wav2vec2 model for word alignment: ``auto`` (whisperx's per-language default), ``off``, a name or a
#: folder. Without one, words are timed by Whisper's own alignment heads.
ALIGN_MODEL = "auto"
#: Voice activity detection of the whisperx engine: ``pyannote`` (whisperx's own cuts) or ``silero``
#: (faster-whisper's bundled ONNX model: a faster start and VAD on a CPU, cuts of its own).
VAD_METHOD = "pyannote"
#: pyannote speaker-diarization pipeline for ``submit --diarize``: a hub id (gated: needs HF_TOKEN)
#: or a local folder holding the pipeline's config.yaml.
DIARIZATION_MODEL = "pyannote/speaker-diarization-community-1"
#: Chinese script of belle2 output (OpenCC): simplified, traditional, or original.
ZH_SCRIPT = "simplified"
#: Enhancement pipeline after transcription (vad, refine, split). Original service name: ENABLE_OPTIMIZATION.
ENABLE_OPTIMIZATION = True
#: How ``split`` builds cues: auto (words when timed), words, segments. Original name: OPTIMIZER_ENGINE.
OPTIMIZER_ENGINE = "auto"
#: Audio windows decoded together; halved on CUDA out-of-memory down to 1.
BATCH_SIZE = 16
#: The belle2 worker's batch on a GPU when batch_size is not set: BELLE-2 (large-v3, float16) needs about
#: 12.5 GiB for 32 windows of 30 s by the formula of scripts/bench_memory.py (checked on the CPU against small
#: shapes), which leaves a 24 GB card room for the CUDA context and the allocator (docs/models.md).
BELLE2_GPU_BATCH_SIZE = 32
#: Waiting jobs a worker claims at once to share its batches (1: one job at a time). A cron folder of
#: short files otherwise leaves most of each batch empty.
BATCH_JOBS = 16
#: A worker stops claiming more jobs for one shared batch once those it holds have this much audio
#: (seconds): 16 windows of 30 s, one full batch; the rest stays queued for other workers.
BATCH_AUDIO = 480.0
#: BELLE-2's checkpoint: a hub id, a local folder, or a name of BELLE2_VARIANTS. Original service name:
#: BELLE2_MODEL_NAME.
BELLE2_MODEL = "BELLE-2/Belle-whisper-large-v3-zh"
#: Named BELLE-2 variants (docs/models.md#belle-2-variants): ``punct`` writes Chinese punctuation, so cues
#: split at sentence ends; ``turbo`` has 4 decoder layers instead of 32, half the weights, faster decoding.
BELLE2_VARIANTS = {
    "punct": "BELLE-2/Belle-whisper-large-v3-zh-punct",
    "turbo": "BELLE-2/Belle-whisper-large-v3-turbo-zh",
}
#: Seconds a stopping worker lets its current job run on before handing it back.
STOP_GRACE = 30.0
#: Seconds between looks at an empty queue.
WORKER_POLL_INTERVAL = 1.0
#: Seconds a worker waits before trying again a spool whose disk is full.
SPOOL_FULL_RETRY_INTERVAL = 5.0

#: Output formats written for every job, whatever else it asks for (the others: ``klipnote.job.OutputFormat``).
ALWAYS_WRITTEN_FORMATS = ("srt", "json")

#: Subtitle style rules (``klipnote.subtitles.StyleRules``), after the Netflix Timed Text Style Guide.
#: Longest line of Latin-script text (characters, spaces and punctuation included).
SUBTITLE_MAX_LINE_WIDTH_LATIN = 42
#: Longest line of Chinese, Japanese or Korean text (characters, full-width punctuation included).
SUBTITLE_MAX_LINE_WIDTH_CJK = 16
#: Lines a cue may have.
SUBTITLE_MAX_LINES = 2
#: Longest a cue may stay on screen (seconds).
SUBTITLE_MAX_CUE_DURATION = 7.0
#: Shortest a cue should stay on screen when the next cue leaves room: 5/6 s, 20 frames at 24 fps.
SUBTITLE_MIN_CUE_DURATION = 5 / 6
#: Least time between the end of one cue and the start of the next (seconds); 0: they may touch.
SUBTITLE_MIN_GAP = 0.0

#: ``klipnote doctor`` warns when the spool's disk has less free space than this (bytes): inputs are
#: copied into the spool, up to MAX_FILE_SIZE each, and outputs are written beside them.
DOCTOR_MIN_FREE_DISK = 10 * 1024**3
#: Seconds ``klipnote doctor`` lets ``ffmpeg -version`` and ``ffprobe -version`` run.
DOCTOR_PROGRAM_TIMEOUT = 10.0
#: Python (major, minor) the pinned environments under envs/ are built and tested with.
ENV_PYTHON = (3, 11)

#: Bytes read at a time to hash (and copy) a file: inputs at submit, model files at pull and verify.
HASH_CHUNK = 4 * 1024 * 1024
#: Mode of a model manifest: readable by every user, so that workers under other users can check a
#: cache shared read-only.
MODEL_MANIFEST_MODE = 0o644
#: Weight formats the belle2 worker never loads, so never downloads: pickles (torch < 2.6 can run code
#: hidden in them, CVE-2025-32434) and other frameworks' copies of the same weights.
NOT_SAFETENSORS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.ot")

#: ``klipnote top`` redraws this often unless told otherwise (seconds).
TOP_REFRESH_INTERVAL = 2.0
#: Failed jobs shown by ``klipnote top``, newest first.
RECENT_FAILURES = 5
#: ``top``, ``metrics`` and ``workers`` show a stopped, failed or offline worker for this long after its
#: last heartbeat (seconds), so that restarts under new ids keep the dashboard and the metrics' series
#: bounded; ``workers --all`` lists every record until ``gc`` removes it.
RECENT_DEAD_WORKERS = 3600.0

#: The review page (``--format html``) marks words whose score (alignment or Whisper probability) is below this.
REVIEW_LOW_WORD_SCORE = 0.5
#: Bit rate of the Opus copy of the recording embedded in a review page on request (bit/s): speech stays
#: clear at 24 kbit/s mono, about 11 MB an hour.
REVIEW_EMBED_BITRATE = 24_000
#: Largest Opus copy embedded in a review page (bytes; about 2 h at REVIEW_EMBED_BITRATE): a page past this
#: opens slowly, so it references the recording beside it instead.
REVIEW_EMBED_MAX_BYTES = 25 * 1024**2

#: Broker mode (issue 13, docs/broker.md). Keys in Redis start with this; one Redis database serves one spool.
BROKER_KEY_PREFIX = "klipnote"
#: Seconds a submit, a command or a worker waits to connect to Redis before saying that it is unreachable.
BROKER_CONNECT_TIMEOUT = 2.0
#: The slowest real-time factor a job may run at (CPU workers on long audio): with MAX_DURATION_HOURS it
#: bounds the longest allowed job, which Redis's visibility timeout must outlast (else Redis hands a running
#: job's message to a second worker).
BROKER_SLOWEST_RTF = 4.0
#: Added to that longest job: model loading, enhancement, a busy disk.
BROKER_VISIBILITY_MARGIN = 3600.0
#: How long Redis keeps the record of a finished job (its spool folder keeps the job itself).
BROKER_ENDED_TTL = 30 * 86400
#: Seconds a dispatched job may wait in its queue before the reconciler dispatches it again (a message lost between
#: Redis and a worker). A backlog longer than this gets its waiting jobs sent a second time; the claim runs one.
BROKER_REDISPATCH_AFTER = 12 * 3600.0
#: ``klipnote flower`` listens here unless told otherwise: this host only, since Flower can revoke tasks and
#: shut workers down.
FLOWER_ADDRESS = "127.0.0.1"
FLOWER_PORT = 5555
