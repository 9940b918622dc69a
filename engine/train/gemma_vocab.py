"""Choose the Gemma ids the converted model keeps (written once to engine/weights/gemma3/vocab.json).

The count is over the training corpus (train split only) tokenized by Gemma 3's own tokenizer;
the list is shipped, not recomputed, so that the conversion and the trained delta agree on every
machine whatever its Python version. Kept: pad/eos/bos/unk/mask (ids 0-4, unchanged), the 256
byte-fallback tokens (every string stays encodable), the most frequent ids, and every BPE merge
part those need (without them the pruned BPE could never produce them).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

SPECIALS = (0, 1, 2, 3, 4)
TOP = 16_384


def count_ids(tokenizer, texts: list[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for i in range(0, len(texts), 256):
        for enc in tokenizer.encode_batch(texts[i:i + 256], add_special_tokens=False):
            counts.update(enc.ids)
    return counts


def select(counts: collections.Counter, tokenizer_json: dict, top: int = TOP) -> list[int]:
    """Specials, bytes, the `top` most frequent ids, and their merge parts; specials first."""
    vocab: dict[str, int] = tokenizer_json["model"]["vocab"]
    byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256)]
    parts: dict[str, tuple[str, str]] = {}
    for m in tokenizer_json["model"]["merges"]:
        left, right = m if isinstance(m, list) else m.split(" ", 1)
        parts.setdefault(left + right, (left, right))  # the earliest merge is the one BPE uses
    frequent = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if i not in SPECIALS][:top]
    by_id = {i: t for t, i in vocab.items()}
    keep = set(SPECIALS) | set(byte_ids)
    stack = list(frequent)
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        pair = parts.get(by_id[i])
        if pair:
            stack.extend(vocab[p] for p in pair if p in vocab)
    return list(SPECIALS) + sorted(keep - set(SPECIALS))


def main(tokenizer_dir: str, out: str) -> None:
    from tokenizers import Tokenizer

    from .data import load_training_corpus

    corpus = load_training_corpus()
    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    counts = count_ids(tok, [f.text for f in corpus.train])
    raw = json.loads(tok.to_str())
    ids = select(counts, raw)
    covered = sum(counts[i] for i in ids) / sum(counts.values())
    Path(out).write_text(json.dumps({"source": corpus.source, "top": TOP, "train_tokens": sum(counts.values()),
                                     "coverage": round(covered, 5), "ids": ids}) + "\n")
    print(f"kept {len(ids)} ids, {covered:.4%} of training tokens")


if __name__ == "__main__":
    import sys

    main(sys.argv[1], sys.argv[2])
