"""Corpora into tokens, without Lightning: ``settings`` (the data section of a config: ``Corpus``, ``TextData``,
``StreamingData``), ``corpus`` (reading, cleaning, quality filters, dedup), ``prepare`` (token shards and their
metadata), ``shards`` (the prepared folder's files and their verification), ``windows`` (training and validation
windows over the shards), ``mixture`` (several corpora with weights), ``litdata_export`` and ``streaming_windows``
(litdata chunks for streaming: writing, and reading with an exact position; litdata is an optional extra) and
``bpe`` (training a byte-level BPE on a corpus)."""
