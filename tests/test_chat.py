"""Chat templates (``lit_gpt.chat``): the real templates of Llama 3.3, Qwen2.5, SmolLM2 and TinyLlama
(``tests/data/chat_templates``) render byte-identical to transformers' ``apply_chat_template`` and encode to the same
ids; ChatML is the default and travels in exports; the assistant turns' token spans; a template that fails is one
ConfigError line."""

from __future__ import annotations

import json

import pytest

from lit_gpt.chat import CHATML, ChatTemplate
from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.formats.hf_folder import save_hf
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

CHATS = {
    "one turn": [{"role": "user", "content": "What is 12 + 30?"}],
    "system and two turns": [
        {"role": "system", "content": "  You answer with one word.\n"},
        {"role": "user", "content": "Reverse 'abc'."},
        {"role": "assistant", "content": "cba"},
        {"role": "user", "content": "And 'xyz'?"},
        {"role": "assistant", "content": " zyx "},
    ],
    "no system, unicode and special text": [
        {"role": "user", "content": "ünïcödé 日本語 😀 <|im_end|> </s> <|eot_id|>"},
        {"role": "assistant", "content": "ok\n\nbye", "tool_calls": None},
        {"role": "user", "content": ""},
    ],
}
# hf_folder names, each with its family's real template (tinyllama: Llama 2's tokenizer.model)
FOLDERS = ["llama3", "qwen2", "smollm2", "tinyllama"]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("chat", list(CHATS))
@pytest.mark.parametrize("name", FOLDERS)
def test_real_templates_render_like_transformers(hf_folder, name, chat, add_generation_prompt):
    folder = hf_folder(name)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    template = ChatTemplate(Tokenizer.from_name(str(folder)))
    messages = CHATS[chat]
    text = template.render(messages, add_generation_prompt=add_generation_prompt)
    assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids = hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False)
    assert template.encode(messages, add_generation_prompt=add_generation_prompt) == ids
    assert template.source == hf.chat_template


def test_template_keywords_reach_the_template(hf_folder):
    folder = hf_folder("llama3")
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    template = ChatTemplate(Tokenizer.from_name(str(folder)))
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    messages = CHATS["one turn"]
    expected = hf.apply_chat_template(messages, tools=tools, date_string="1 Jan 2025", tokenize=False)
    assert template.render(messages, tools=tools, date_string="1 Jan 2025") == expected
    assert '"name": "add"' in expected and "1 Jan 2025" in expected


@pytest.mark.parametrize("name", FOLDERS)
def test_assistant_turn_spans(hf_folder, name):
    tok = Tokenizer.from_name(str(hf_folder(name)))
    template = ChatTemplate(tok)
    messages = CHATS["system and two turns"]
    ids, spans = template.encode_turns(messages)
    assert ids == template.encode(messages) and len(spans) == 2
    text, starts = template.render(messages), tok.encode_with_offsets(template.render(messages))[1]
    first, second = (text[starts[a] : starts[b] if b < len(ids) else len(text)] for a, b in spans)
    end = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>\n", "smollm2": "<|im_end|>\n", "tinyllama": "</s>\n"}[name]
    content = "zyx" if name == "llama3" else " zyx "  # Llama 3's template trims each message
    assert (first, second) == ("cba" + end, content + end)
    assert spans[0][1] < spans[1][0] and spans[1][1] == len(ids)


def test_models_trained_here_get_chatml_and_exports_carry_it(tmp_path):
    tok = Tokenizer.from_name("gpt2")
    template = ChatTemplate(tok)
    assert template.source == CHATML and tok.chat_template is None
    messages = CHATS["system and two turns"]
    assert template.render(messages, add_generation_prompt=True).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert template.stop_ids == [tok.eot_id] and template.stop_texts == ["<|im_end|>"]
    model = GPT(Config(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_hf(model, tok, tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for add in (False, True):
        assert template.render(messages, add) == hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add
        )
        assert template.encode(messages, add) == hf.apply_chat_template(
            messages, add_generation_prompt=add, return_dict=False
        )


def test_a_folder_without_a_template_gets_chatml_in_exports(hf_folder, tmp_path):
    tok = Tokenizer.from_name(str(hf_folder("llama2")))  # Llama 2's base config has no chat template
    assert tok.chat_template is None and ChatTemplate(tok).source == CHATML
    save_hf(GPT(Config(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)), tok, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.chat_template == CHATML
    assert (tmp_path / "tokenizer.model").read_bytes() == (hf_folder("llama2") / "tokenizer.model").read_bytes()
    messages = CHATS["one turn"]
    assert ChatTemplate(tok).encode(messages) == hf.apply_chat_template(messages, return_dict=False)


@pytest.mark.parametrize(
    "source, messages, message",
    [
        (
            "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
            CHATS["one turn"],
            "must alternate",
        ),
        ("{{ messages[0]['content'] + 1 }}", CHATS["one turn"], "TypeError"),
        ("{% set ns = namespace(_x=1) %}", CHATS["one turn"], "SecurityError"),
        ("{% for %}", CHATS["one turn"], "not valid Jinja"),
    ],
)
def test_a_template_that_fails_is_one_config_error(source, messages, message):
    tok = Tokenizer.from_name("gpt2")
    with pytest.raises(ConfigError, match="chat template of 'gpt2'") as info:
        ChatTemplate(tok, source).render(messages)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_template_that_fails_on_the_messages(hf_folder):
    template = ChatTemplate(Tokenizer.from_name(str(hf_folder("qwen2"))))
    with pytest.raises(ConfigError, match="failed to render these messages.*UndefinedError"):
        template.render([])  # Qwen's template reads messages[0]
    with pytest.raises(ConfigError, match="a chat is a list of messages"):
        template.render(["not a dict"])
