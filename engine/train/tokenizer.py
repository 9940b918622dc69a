"""A byte-level BPE for Python, trained on the train split only.

Byte-level means every string round-trips (tabs, CRLF, non-ASCII, invalid-looking bytes); the
GPT-2 split regex keeps runs of spaces together, so indentation becomes a few whole tokens.
Special ids 0-3 are `<pad>`, `<eos>`, `<bos>`, `<fill>`, as engine/testing.py's tiny checkpoints use them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<fill>"]


def save_tokenizer(tok, out: Path) -> None:
    """Save as `tokenizer.json` + `tokenizer_config.json`, the form `AutoTokenizer` loads."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        additional_special_tokens=["<fill>"],
    )
    fast.save_pretrained(str(out))


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """Train the BPE (deterministic for a given input order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i, f"{name} must have id {i}"
    return tok


def save(tok, out: str | Path) -> Path:
    """Write tokenizer.json + tokenizer_config.json (what AutoTokenizer and the engine load)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out)
    return out


def load(path: str | Path):
    """The raw `tokenizers.Tokenizer` from a directory (fast path for training)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(path) / "tokenizer.json"))


def encode(tok, text: str) -> list[int]:
    """Token ids without special tokens, as the engine tokenizes prefix and suffix."""
    return tok.encode(text, add_special_tokens=False).ids if text else []
