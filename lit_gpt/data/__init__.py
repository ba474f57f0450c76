"""Corpora into tokens, without Lightning: ``corpus`` (reading, cleaning, dedup), ``prepare`` (token shards and
their metadata), ``windows`` (training and validation windows over the shards) and ``bpe`` (training a byte-level
BPE on a corpus)."""
