"""A SentencePiece BPE ``tokenizer.model`` (Llama 2, TinyLlama, Mistral 7B v0.1) as a ``tokenizers`` pipeline, built
the way transformers 5 builds ``LlamaTokenizer`` from that file, so the ids equal ``AutoTokenizer``'s.

transformers 5 no longer runs the SentencePiece library to encode: ``LlamaTokenizer`` converts the model to a
byte-fallback BPE of the ``tokenizers`` library (``tokenization_utils_tokenizers._convert_from_sentencepiece`` with
``convert_slow_tokenizer.SentencePieceExtractor`` and ``generate_merges``, then ``LlamaTokenizer.__init__``):

- vocabulary: piece -> id; merges: for each piece in id order, every split into two pieces of the vocabulary, shorter
  left part first; ``BPE(fuse_unk=True, byte_fallback=True)`` without an unknown token;
- pre-tokenizer ``Metaspace("▁", split=False)``, prepending ``▁`` to the text (``prepend_scheme`` ``first`` for
  ``legacy: false``, ``always`` for ``legacy: true``, ``never`` for ``add_prefix_space: false``): it does not prepend
  to a text that already starts with a space, where the SentencePiece library would, and it does not split at
  whitespace before merging, so runs of spaces can merge differently from the SentencePiece library's own output;
- control pieces (``<s>``, ``</s>``) as special added tokens, user-defined pieces as plain added tokens, and the named
  special tokens of ``tokenizer_config.json`` (``<unk>`` ...) as special added tokens;
- decoder: ``▁`` -> space, byte fallback, fuse, and strip the one leading space the pre-tokenizer added;
- post-processor: the BOS / EOS that ``add_bos_token`` / ``add_eos_token`` ask for (``update_post_processor``).

Only SentencePiece BPE models with the identity normalizer (the Llama family) are converted; a folder with another
kind ships a ``tokenizer.json`` to use instead. Needs the ``sentencepiece`` extra (its protobuf reader).
"""

from __future__ import annotations

from lit_gpt.errors import ConfigError
from lit_gpt.extras import require

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
"""``SentencePiece.Type`` values of sentencepiece_model.proto."""
BPE = 2
"""``TrainerSpec.ModelType.BPE``."""
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
"""The named special tokens of a ``tokenizer_config.json`` (transformers' ``SPECIAL_TOKENS_ATTRIBUTES``)."""


def read_model(data: bytes, source: str):
    """The ``ModelProto`` of a ``tokenizer.model``.

    Raises:
        ConfigError: naming ``source``, when the extra is missing, the bytes are not a SentencePiece model, or the
            model is not a BPE with the identity normalizer.
    """
    pb2 = require("sentencepiece.sentencepiece_model_pb2", "sentencepiece", "a SentencePiece tokenizer.model")
    proto = pb2.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # protobuf's DecodeError
        raise ConfigError(
            f"{source} is not a SentencePiece model; pass a folder with a valid tokenizer.model"
        ) from None
    if not proto.pieces:
        raise ConfigError(f"{source} is not a SentencePiece model (it has no pieces)")
    spec = proto.normalizer_spec
    if proto.trainer_spec.model_type != BPE or spec.name not in ("identity", "") or spec.remove_extra_whitespaces:
        raise ConfigError(
            f"{source} is a SentencePiece model lit_gpt does not convert (only BPE with the identity normalizer, as "
            "in Llama 2); use a folder that also has a tokenizer.json"
        )
    return proto


def merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of every piece into two pieces of ``vocab``: pieces in id order, and within a piece the shorter
    left part first (transformers' ``generate_merges`` without scores)."""
    found = []
    for piece, rank in vocab.items():
        local = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab]
        local.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        found.extend((left, right, rank) for left, right in local)
    found.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])))
    return [(left, right) for left, right, _ in found]


def token_content(value) -> str | None:
    """The text of a special-token entry of ``tokenizer_config.json``: a string, or an ``AddedToken`` dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_json(data: bytes, config: dict, source: str) -> str:
    """The ``tokenizer.json`` text of the SentencePiece model ``data``, as transformers 5 builds it with the settings
    of ``config`` (the folder's ``tokenizer_config.json``: ``legacy``, ``add_prefix_space``, ``add_bos_token``,
    ``add_eos_token`` and the named special tokens).

    Raises:
        ConfigError: as ``read_model`` does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    proto = read_model(data, source)
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges(vocab), fuse_unk=True, byte_fallback=True, dropout=None))
    add_prefix_space = config.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    scheme = ("always" if config.get("legacy") else "first") if add_prefix_space else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_prefix_space else []))
    pieces = [(p.piece, p.type == CONTROL) for p in proto.pieces if p.type in (CONTROL, USER_DEFINED)]
    tok.add_tokens([AddedToken(text, normalized=False, special=special) for text, special in pieces])
    trainer = proto.trainer_spec
    named = {
        "bos_token": trainer.bos_piece if trainer.bos_id >= 0 else None,
        "eos_token": trainer.eos_piece if trainer.eos_id >= 0 else None,
        "unk_token": trainer.unk_piece if trainer.unk_id >= 0 else None,
    }
    named.update({key: token_content(config[key]) for key in SPECIAL_KEYS if key in config})
    present = {text for text, _ in pieces}
    extra = [t for t in dict.fromkeys(named.values()) if t is not None and t not in present]
    tok.add_special_tokens([AddedToken(text, normalized=False, special=True) for text in extra])
    tok.post_processor = _template(tok, named, bool(config.get("add_bos_token")), bool(config.get("add_eos_token")))
    return tok.to_str()


def _template(tok, named: dict, add_bos: bool, add_eos: bool):
    """transformers' ``update_post_processor``: ``<bos>:0 $A:0 <eos>:0`` with the tokens asked for."""
    from tokenizers import processors

    bos, eos = named.get("bos_token"), named.get("eos_token")
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
    pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
    special = [(t, tok.token_to_id(t)) for t, wanted in ((bos, add_bos), (eos, add_eos)) if wanted]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
