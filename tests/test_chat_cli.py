"""``lit-gpt chat``: driven through a pseudo-terminal (the ``pty`` module) as a person would, on a model built to
answer with a known reply; each turn's prompt is the whole conversation rendered by the template; the reply stops at
an end-of-turn id or text; ``/reset`` and ``/exit``."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_gpt.chat import ChatTemplate
from lit_gpt.checkpoint import save_folder
from lit_gpt.cli.chat import PROMPT
from lit_gpt.cli.generate import stream_text
from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
REPLY = "Good day, sir"


def bigram_model(tokenizer: Tokenizer, chain: list[int]) -> GPT:
    """A model whose greedy choice after token ``chain[i]`` is ``chain[i + 1]`` (and the end-of-text id after any
    other): one-hot embeddings, blocks that add nothing (zero output projections), and a head that reads the
    transition table, so its replies are known."""
    width = tokenizer.vocab_size + tokenizer.vocab_size % 2
    config = Config(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=1, n_embd=width)
    model = GPT(config.replace(tie_embeddings=False, zero_init_proj=True)).eval()
    with torch.no_grad():
        model.embed_tokens.weight.copy_(torch.eye(tokenizer.vocab_size, width))
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.eot_id, :] = 0.5  # the default next token
        for before, after in zip(chain, chain[1:]):
            model.lm_head.weight[after, before] = 1.0
    return model


@pytest.fixture
def chat_checkpoint(hf_folder, tmp_path) -> tuple[Path, Tokenizer, list[int]]:
    """A model on a Qwen2-format tokenizer (ChatML with <|im_end|> as one token) that answers every turn with REPLY
    and <|im_end|>: after the generation prompt's last token, newline."""
    tokenizer = Tokenizer.from_name(str(hf_folder("qwen2")))
    end = tokenizer.encode("<|im_end|>", allow_special=True)
    reply = tokenizer.encode(REPLY)
    newline = tokenizer.encode("\n")
    assert len(end) == len(newline) == 1 and len(set(reply)) == len(reply) and newline[0] not in reply
    save_folder(bigram_model(tokenizer, newline + reply + end), tokenizer, tmp_path / "model")
    return tmp_path / "model", tokenizer, reply


class Terminal:
    """A command on a pseudo-terminal: ``write`` a line, ``read_until`` a text appears."""

    def __init__(self, args: list[str]) -> None:
        self.main, child = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, cwd=REPO, env=env)
        os.close(child)
        self.seen = ""

    def read_until(self, text: str, timeout: float = 120) -> str:
        """Everything printed since the last call, up to and including ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            ready, _, _ = select.select([self.main], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {text!r} after {timeout}: {self.seen!r}")
            try:
                chunk = os.read(self.main, 4096).decode("utf-8", "replace")
            except OSError:  # the command exited
                raise AssertionError(f"exited before {text!r}: {self.seen!r}") from None
            self.seen += chunk.replace("\r\n", "\n")
        head, _, self.seen = self.seen.partition(text)
        return head + text

    def write(self, line: str) -> None:
        os.write(self.main, (line + "\n").encode())

    def close(self) -> int:
        code = self.process.wait(timeout=60)
        os.close(self.main)
        return code


def test_chat_in_a_terminal_streams_replies_and_obeys_reset_and_exit(chat_checkpoint):
    folder, _, _ = chat_checkpoint
    args = [sys.executable, "-m", "lit_gpt.cli", "chat", "--checkpoint", str(folder), "--temperature", "0"]
    terminal = Terminal([*args, "--max_new_tokens", "40", "--device", "cpu"])
    try:
        assert "lit-gpt chat" in terminal.read_until(PROMPT)
        terminal.write("Hello there!")
        first = terminal.read_until(PROMPT)
        assert first.split("\n")[-2:] == [REPLY, PROMPT]  # the echoed turn, then the reply, stopped at <|im_end|>
        terminal.write("And again?")
        assert terminal.read_until(PROMPT).split("\n")[-2:] == [REPLY, PROMPT]
        terminal.write("/reset")
        assert "(a new conversation)" in terminal.read_until(PROMPT)
        terminal.write("/exit")
        assert terminal.close() == 0
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()


def test_each_turn_sees_the_whole_conversation_and_reset_forgets_it(chat_checkpoint, run_main, monkeypatch):
    """The ids each reply is sampled from: the conversation so far in the model's template, with the generation
    prompt; after /reset, only the new turn (and the system message, kept)."""
    import lit_gpt.cli.chat as chat

    folder, tokenizer, _ = chat_checkpoint
    prompts, real = [], chat.iter_tokens

    def recording(model, idx, *args, **kwargs):
        prompts.append(idx[0].tolist())
        return real(model, idx, *args, **kwargs)

    monkeypatch.setattr(chat, "iter_tokens", recording)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("One?\nTwo?\n/reset\nThree?\n"))
    code, out, _ = run_main("chat", "--checkpoint", folder, "--temperature", 0, "--system", "Be brief.")
    assert code == 0 and out.count(REPLY) == 3
    template = ChatTemplate(tokenizer)
    system = {"role": "system", "content": "Be brief."}
    turn = [{"role": "user", "content": "One?"}, {"role": "assistant", "content": REPLY}]
    expected = [
        [system, {"role": "user", "content": "One?"}],
        [system, *turn, {"role": "user", "content": "Two?"}],
        [system, {"role": "user", "content": "Three?"}],
    ]
    assert prompts == [template.encode(messages, add_generation_prompt=True) for messages in expected]


def test_a_reply_stops_at_a_stop_text_spelled_in_several_tokens(capsys):
    """ChatML on a tokenizer without <|im_end|> as one token: the reply ends where the text appears, and what could
    start it is held back rather than printed."""
    tokenizer = Tokenizer.char("abcdefghijklmnopqrstuvwxyz<|>_ ")
    assert ChatTemplate(tokenizer).stop_texts == ["<|im_end|>"]
    tokens = (torch.tensor([i]) for i in tokenizer.encode("it is ok<|im_end|>and more"))
    assert stream_text(tokens, tokenizer, ["<|im_end|>"], {tokenizer.eot_id}) == "it is ok"
    assert capsys.readouterr().out == "it is ok\n"


def test_bad_chat_options_are_one_error_line(chat_checkpoint, run_main, errors, tmp_path):
    folder, _, _ = chat_checkpoint
    for flags, message in (
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
        (["--chat_template", tmp_path / "none.jinja"], "--chat_template .*none.jinja not found"),
    ):
        code, _, err = run_main("chat", "--checkpoint", folder, *flags)
        assert code == 2 and len(errors(err)) == 1 and __import__("re").search(message, errors(err)[0])
