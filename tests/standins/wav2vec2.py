"""A wav2vec2 CTC alignment model that needs no download: tiny, randomly initialised, seeded.

What it stands in for: the wav2vec2 model that ``whisperx.load_align_model`` would fetch for a
language (``WAV2VEC2_ASR_BASE_960H`` from torch hub for English, ``jonatasgrosman/...`` and others
from the Hugging Face hub). No model hub is reachable from build or CI machines, so klipnote's
``align_model`` setting is pointed at a local folder built here instead.

How whisperx loads it: ``load_align_model(language, device, model_name=<folder>)`` takes the
Hugging Face branch for any name that is not a torchaudio pipeline:
``Wav2Vec2Processor.from_pretrained(folder)`` (a 16 kHz ``Wav2Vec2FeatureExtractor`` plus a
``Wav2Vec2CTCTokenizer``) and ``Wav2Vec2ForCTC.from_pretrained(folder)``. Its alignment dictionary
is ``{char.lower(): id for char, id in processor.tokenizer.get_vocab().items()}``; ``align`` looks
up each lowercased character of the transcript there (a space becomes ``|``, anything else unknown
becomes a wildcard column), takes ``<pad>`` as the CTC blank, runs ``model(waveform).logits`` on
each segment's audio, and force-aligns the characters with a trellis and backtrack.

What it is: the vocabulary of an English character CTC model (``<pad>``, ``<s>``, ``</s>``,
``<unk>``, ``|`` as word delimiter, ``'``, ``a``-``z``), the standard wav2vec2 convolutional feature
encoder (one frame per 320 samples, 20 ms, as in the real models, so frame-to-time ratios are
realistic) and a 2-layer transformer of width 32, all randomly initialised from ``seed``: the same
seed gives the same weights. Saved with ``save_pretrained`` as safetensors, a few hundred KiB,
built at test time (nothing binary is committed).

What it does not verify: the quality of word times. Its emissions are noise, so the alignment is
valid CTC paths (every character gets a frame span inside its segment, words in order) but not
where the words are spoken. How a real model's weights load from a hub, or torchaudio's pipeline
branch (``WAV2VEC2_ASR_BASE_960H``), is not exercised either.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

#: The tokens, in id order. ``<pad>`` is id 0, the CTC blank whisperx looks for.
VOCABULARY = ("<pad>", "<s>", "</s>", "<unk>", "|", "'", *string.ascii_lowercase)


def build(folder: Path, seed: int = 0) -> Path:
    """Write a tiny ``Wav2Vec2ForCTC`` and its ``Wav2Vec2Processor`` into ``folder``; return it."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps({token: index for index, token in enumerate(VOCABULARY)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                     eos_token="</s>", word_delimiter_token="|", do_lower_case=False)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)

    config = Wav2Vec2Config(
        vocab_size=len(VOCABULARY), pad_token_id=0, bos_token_id=1, eos_token_id=2,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=False, ctc_loss_reduction="mean",
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def write_punkt_tab(data_root: Path, language: str = "english") -> Path:
    """An NLTK data folder holding an untrained ``punkt_tab`` model for ``language``; return the root.

    ``whisperx.align`` splits each segment into sentences with
    ``nltk.data.load('tokenizers/punkt_tab/<language>.pickle')``, which NLTK serves from the
    ``tokenizers/punkt_tab/<language>/`` folder of its data path, and falls back to
    ``nltk.download('punkt_tab')`` (the network) when it is missing. The four parameter files are
    written empty: that is a Punkt tokenizer with no learned abbreviations, collocations or sentence
    starters (``PunktSentenceTokenizer()`` with default parameters), which still splits at ``.``,
    ``?`` and ``!`` followed by a space. Point ``NLTK_DATA`` at the returned root. The folders are
    made private (0700): this NLTK does not read data from a group- or world-writable data root.
    """
    root = Path(data_root)
    folder = root / "tokenizers" / "punkt_tab" / language
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for part in (root, root / "tokenizers", folder.parent, folder):
        part.chmod(0o700)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (folder / name).write_text("")
    return root
