"""The encoding stage of ``lit_gpt.data.prepare``: documents cut into token-neutral pieces, encoded on a thread pool and
written to the shards in order, with bounded memory.

A document longer than ``PIECE_CHARS`` is cut at newlines where every tiktoken pattern starts a new pre-token anyway,
so the pieces' tokens equal those of the whole document (a Hugging Face tokenizer is cut only when its pre-tokenizer
is one of those patterns: ``Tokenizer.splits_at_newlines``; a SentencePiece-style one, which prepends a space to each
text, encodes each document whole). tiktoken's ``encode_to_numpy`` and ``tokenizers``' ``encode_batch`` release the
GIL, so pieces are encoded in parallel while the next documents are read and cleaned. Each document starts with the
tokenizer's ``document_prefix`` (a Hugging Face tokenizer's BOS) and documents are joined with its end-of-text id.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lit_gpt.data.shards import ShardWriter
from lit_gpt.tokenizer import Tokenizer

PIECE_CHARS = 1 << 18
"""Documents longer than this are encoded in pieces of about this many characters, in parallel."""
BATCH_CHARS = 1 << 23
"""Characters being encoded or waiting to be written at any time: bounds the memory of the pipeline."""
# After a newline that ends a whitespace run, where the next pre-token starts with a non-space or with one space and
# a non-space, GPT-2's, r50k's and cl100k's patterns all split anyway (checked on every shared corpus).
_PIECE_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")


def pieces(text: str, split: bool = True) -> Iterator[str]:
    """``text`` in consecutive pieces of about ``PIECE_CHARS`` characters, cut only at token-neutral newlines; whole
    unless ``split``."""
    start = 0
    if not split:
        yield text
        return
    while len(text) - start > PIECE_CHARS:
        match = _PIECE_BOUNDARY.search(text, start + PIECE_CHARS)
        if match is None:
            break
        yield text[start : match.start()]
        start = match.start()
    yield text[start:]


class EncodeQueue:
    """Pieces being encoded (futures on the pool) in document order; written to the shards oldest first, so at most
    about ``BATCH_CHARS`` characters are in flight."""

    def __init__(self, tok: Tokenizer, pool: ThreadPoolExecutor | None, writers: dict[str, ShardWriter], bar) -> None:
        self.tok, self.pool, self.writers, self.bar = tok, pool, writers, bar
        self.in_flight: deque = deque()  # (split, starts a document, characters, future or token ids)
        self.chars = 0
        self.eot, self.prefix = np.array([tok.eot_id]), np.array(tok.document_prefix, dtype=np.int64)

    def put(self, split: str, starts_document: bool, piece: str) -> None:
        if self.pool is None:
            ids = self.tok.encode(piece)
        elif self.tok.hf is not None:
            ids = self.pool.submit(lambda text: self.tok.hf.encode_batch([text])[0], piece)
        else:
            ids = self.pool.submit(
                self.tok.encoding.encode_to_numpy, piece, allowed_special=set(), disallowed_special=()
            )
        self.in_flight.append((split, starts_document, len(piece), ids))
        self.chars += len(piece)
        while self.chars > BATCH_CHARS:
            self._write_oldest()

    def drain(self) -> None:
        while self.in_flight:
            self._write_oldest()

    def _write_oldest(self) -> None:
        split, starts, n_chars, ids = self.in_flight.popleft()
        writer = self.writers[split]
        if starts:
            if writer.documents:
                writer.write(self.eot)
            writer.documents += 1
            if len(self.prefix):
                writer.write(self.prefix)
        writer.write(np.asarray(ids.result() if self.pool is not None else ids, dtype=writer.dtype))
        self.chars -= n_chars
        self.bar.update(n_chars)
