"""Build a small CLIP BPE tokenizer (``vocab.json`` + ``merges.txt``) for a closed vocabulary.

Used for ShapeWorld and for the tiny test models: the files have exactly the layout of SD 1.5's
``tokenizer/`` folder, so ``CLIPTokenizer.from_pretrained`` loads them like real ones. Every
word of the vocabulary becomes one token (``word</w>``).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_clip_tokenizer(words: list[str], folder: str | Path) -> Path:
    """Train a BPE over ``words`` (plus letters and punctuation) and save a CLIP tokenizer folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w.lower() for w in words})
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    corpus = words * 4 + alphabet
    bpe = Tokenizer(models.BPE(unk_token=None, end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=100000, min_frequency=1, special_tokens=[], initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = {}
    for ch in alphabet:  # CLIP keeps every byte both bare and word-final
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    for tok in sorted(state["vocab"], key=state["vocab"].get):
        vocab.setdefault(tok, len(vocab))
    vocab.setdefault(BOS, len(vocab))
    vocab.setdefault(EOS, len(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
    }))
    return folder
