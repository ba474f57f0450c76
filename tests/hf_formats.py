"""Hugging Face tokenizer folders in the formats of real models, trained small in-process (no hub access here).

Each format copies, from the model's published files, what decides its ids: the normalizer, pre-tokenizer
(regex), post-processor, decoder and BPE flags of ``tokenizer.json``, its special tokens (same texts, same order, same
``special`` flags), and the special-token entries of ``tokenizer_config.json`` and ``generation_config.json``. Only
the vocabulary is different: a byte-level BPE of ``vocab_size`` tokens trained with ``tokenizers`` on the text given,
with the model's own pre-tokenizer. Special tokens follow the trained vocabulary (SmolLM2's come first, as in its file),
so their ids are smaller than in the real files; ``generation_config.json`` maps the real ids to them.

Sources (the Hugging Face hub, files ``tokenizer.json``, ``tokenizer_config.json``, ``generation_config.json``):
- ``llama3``: meta-llama/Llama-3.2-1B-Instruct (Llama 3.1 / 3.2 special-token names; 256 special tokens).
- ``qwen2``: Qwen/Qwen2.5-0.5B-Instruct (Qwen3 has the same pipeline and regex, plus four more added tokens).
- ``smollm2``: HuggingFaceTB/SmolLM2-135M-Instruct.
The chat templates are the files of ``tests/data/chat_templates`` (see its README).
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_gpt.tokenizer_hf import LLAMA3_PATTERN, QWEN2_PATTERN

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"


def _byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:
    return {
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    }


def _split(pattern: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


LLAMA3_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    *[f"<|reserved_special_token_{i}|>" for i in range(3, 248)],
]
QWEN2_ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
SMOLLM2_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
]

FORMATS = {
    "llama3": {
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [_split(LLAMA3_PATTERN), _byte_level(False, True, False)],
        },
        "decoder": _byte_level(True, True, True),
        "ignore_merges": True,
        "leading_special": [],
        "trailing": [(t, True) for t in LLAMA3_SPECIAL],
        "config": {
            "bos_token": "<|begin_of_text|>",
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|eot_id|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
        "generation": {
            "bos_token_id": "<|begin_of_text|>",
            "eos_token_id": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        },
        "template": "meta-llama-Llama-3.3-70B-Instruct.jinja",
    },
    "qwen2": {
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [_split(QWEN2_PATTERN), _byte_level(False, False, False)],
        },
        "post_processor": _byte_level(False, False, False),
        "decoder": _byte_level(False, False, False),
        "ignore_merges": False,
        "leading_special": [],
        "trailing": QWEN2_ADDED,
        "config": {
            "add_prefix_space": False,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
        "generation": {"bos_token_id": "<|endoftext|>", "eos_token_id": ["<|im_end|>", "<|endoftext|>"]},
        "template": "Qwen-Qwen2.5-7B-Instruct.jinja",
    },
    "smollm2": {
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(False, True, True)],
        },
        "post_processor": _byte_level(True, False, True),
        "decoder": _byte_level(True, True, True),
        "ignore_merges": False,
        "leading_special": SMOLLM2_SPECIAL,
        "trailing": [],
        "config": {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": "<|im_start|>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "model_max_length": 8192,
            "pad_token": "<|im_end|>",
            "tokenizer_class": "GPT2Tokenizer",
            "unk_token": "<|endoftext|>",
            "vocab_size": 49152,
        },
        "generation": {"bos_token_id": "<|im_start|>", "eos_token_id": "<|im_end|>"},
        "template": "HuggingFaceTB-SmolLM2-135M-Instruct.jinja",
    },
}


def _llama3_post_processor(bos_id: int) -> dict:
    bos = "<|begin_of_text|>"
    return {
        "type": "Sequence",
        "processors": [
            _byte_level(True, False, True),
            {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": bos, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
            },
        ],
    }


def build_folder(name: str, texts: list[str], out: Path, vocab_size: int = 1024) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts`` with the pipeline of format ``name``, and write
    ``tokenizer.json``, ``tokenizer_config.json`` (with the model's chat template) and ``generation_config.json``
    into ``out``; returns ``out``."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    fmt = FORMATS[name]
    tok = Tokenizer(models.BPE())
    data = json.loads(tok.to_str())
    data["normalizer"], data["pre_tokenizer"] = fmt["normalizer"], fmt["pre_tokenizer"]
    tok = Tokenizer.from_str(json.dumps(data))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in fmt["leading_special"]],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in fmt["trailing"]])
    data = json.loads(tok.to_str())
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    data["normalizer"], data["pre_tokenizer"], data["decoder"] = fmt["normalizer"], fmt["pre_tokenizer"], fmt["decoder"]
    data["post_processor"] = fmt.get("post_processor") or _llama3_post_processor(ids["<|begin_of_text|>"])
    data["model"].update(dropout=None, fuse_unk=False, byte_fallback=False, ignore_merges=fmt["ignore_merges"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {**fmt["config"], "chat_template": (TEMPLATES / fmt["template"]).read_text(encoding="utf-8")}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    def as_ids(value):
        return [ids[v] for v in value] if isinstance(value, list) else ids[value]

    generation = {key: as_ids(value) for key, value in fmt["generation"].items()}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    return out
