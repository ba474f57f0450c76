"""The rolling KV cache with attention sinks: in a one-layer model (whose keys and values depend on the token and its
position only) every step equals a plain forward pass over the sinks and the window, with positions counted in the
cache; generation past block_size stays one single-token forward pass per token; bad policies are refused."""

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.generate import default_kv_cache, forced_logits, generate, iter_tokens, left_pad
from lit_gpt.kv_cache import RollingKVCache
from lit_gpt.model import GPT
from lit_gpt.rope import rope_cache

BLOCK = 12
STYLES = {
    "llama": {},
    "gqa": dict(n_kv_head=2),
    "qk_norm": dict(qk_norm=True),
    "value_residual_gqa": dict(value_residual=True, n_kv_head=2),
}


def one_layer(**overrides) -> GPT:
    return GPT(Config(vocab_size=61, block_size=BLOCK, n_layer=1, n_head=4, n_embd=32, **overrides)).eval()


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("sinks", [0, 1, 4])
def test_each_step_equals_a_forward_over_the_sinks_and_the_window(style, sinks):
    model = one_layer(**STYLES[style])
    stream = torch.randint(0, 61, (2, 5 * BLOCK))
    with torch.no_grad():
        model.setup_kv_cache(2, BLOCK, sinks=sinks)
        model(stream[:, :5], input_pos=torch.arange(5))  # a prefill, then one token at a time
        for n in range(5, stream.size(1)):
            step = model(stream[:, n : n + 1], input_pos=torch.tensor([n]))[:, -1]
            seen = stream[:, : n + 1]
            kept = seen if n < BLOCK else torch.cat((seen[:, :sinks], seen[:, n + 1 - (BLOCK - sinks) :]), dim=1)
            torch.testing.assert_close(step, model(kept)[:, -1], rtol=1e-5, atol=1e-5, msg=f"token {n}")


def test_left_padded_rows_keep_their_padding_among_the_sinks():
    model, sinks = one_layer(), 2
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    idx, pad = left_pad(prompts, pad_id=0)  # pad [3, 0, 5]: 5 + 2 entries are kept for good
    rows = [list(p) for p in prompts]
    with torch.no_grad():
        model.setup_kv_cache(3, BLOCK, left_pad=pad, sinks=sinks)
        model(idx, input_pos=torch.arange(idx.size(1)))
        for n in range(idx.size(1), 3 * BLOCK):
            new = torch.randint(0, 61, (3,))
            step = model(new[:, None], input_pos=torch.tensor([n]))[:, -1]
            for b, row in enumerate(rows):
                row.append(int(new[b]))
                kept_sinks = sinks + int(pad.max() - pad[b])  # this row's real tokens among the kept entries
                window = BLOCK - sinks - int(pad.max())
                alone = row if len(row) <= kept_sinks + window else row[:kept_sinks] + row[-window:]
                expected = model.forward(torch.tensor([alone]))[0, -1]
                torch.testing.assert_close(step[b], expected, rtol=1e-5, atol=1e-5, msg=f"row {b}, token {n}")


def test_generation_past_block_size_is_one_single_token_forward_per_token():
    model = GPT(Config(vocab_size=61, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32)).to(torch.bfloat16).eval()
    lengths = []
    original = model.hidden_states
    model.hidden_states = lambda idx, *args, **kwargs: lengths.append(idx.size(1)) or original(idx, *args, **kwargs)
    idx = torch.randint(0, 61, (2, 5))
    tokens = list(iter_tokens(model, idx, 4 * BLOCK, temperature=1.0, kv_cache="rolling", sinks=4))
    assert len(tokens) == 4 * BLOCK and lengths == [5] + [1] * (4 * BLOCK - 1)
    model.setup_kv_cache(2, BLOCK, sinks=4)
    assert model.layers[0].self_attn.kv_cache.k.dtype == torch.float32  # rotated in place: kept in float32
    assert model.layers[0].self_attn.kv_cache.v.dtype == torch.bfloat16


def test_rolling_and_reprefill_agree_until_block_size():
    model = GPT(Config(vocab_size=61, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32)).eval()
    idx = torch.randint(0, 61, (2, 3))
    rolling = generate(model, idx, 2 * BLOCK, temperature=0.0, kv_cache="rolling", sinks=2)
    reprefill = generate(model, idx, 2 * BLOCK, temperature=0.0, kv_cache="reprefill")
    assert torch.equal(rolling[:, : BLOCK + 1], reprefill[:, : BLOCK + 1])  # the first token past the window too


def test_the_shift_is_a_pure_rotation_whatever_the_tables_scale():
    cos, sin = rope_cache(4, 8)
    plain = RollingKVCache((1, 1, 3, 8), 1, (cos[1], sin[1]))
    scaled = RollingKVCache((1, 1, 3, 8), 1, (1.3 * cos[1], 1.3 * sin[1]))  # YaRN's attention factor in the tables
    keys = torch.randn(1, 1, 4, 8)
    for cache in (plain, scaled):
        for n in range(4):
            cache.update(torch.tensor([n]), keys[:, :, n : n + 1], keys[:, :, n : n + 1])
    torch.testing.assert_close(scaled.k, plain.k, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plain.k[:, :, 1:].norm(dim=-1), keys[:, :, [3, 2]].norm(dim=-1))  # slots 1, 2: 3, 2


def test_bad_rolling_caches_are_refused():
    model = one_layer()
    with pytest.raises(ConfigError, match="kv_cache must be one of rolling, reprefill"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 2, kv_cache="sliding")
    with pytest.raises(ConfigError, match=r"sinks must be in \[0, block_size = 12\)"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 2, kv_cache="rolling", sinks=12)
    learned = one_layer(position_embedding="learned")
    with pytest.raises(ConfigError, match="kv_cache rolling needs RoPE positions"):
        generate(learned, torch.zeros(1, 2, dtype=torch.long), 2, kv_cache="rolling")
    with pytest.raises(ValueError, match="needs RoPE positions"):
        learned.setup_kv_cache(1, sinks=2)
    dynamic = one_layer(rope_scaling=dict(type="dynamic", factor=2.0, original_block_size=BLOCK // 2))
    with pytest.raises(ConfigError, match="dynamic RoPE scaling changes with the length"):
        generate(dynamic, torch.zeros(1, 2, dtype=torch.long), 2, kv_cache="rolling")
    assert [default_kv_cache(m) for m in (model, learned, dynamic)] == ["rolling", "reprefill", "reprefill"]
    model.setup_kv_cache(1, 4, sinks=1)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), input_pos=torch.arange(4))
        with pytest.raises(ValueError, match="takes one token per forward pass, got 2"):
            model(torch.zeros(1, 2, dtype=torch.long), input_pos=torch.arange(4, 6))


@pytest.mark.parametrize("kv_cache", ["rolling", "reprefill"])
def test_teacher_forcing_computes_what_generation_computes(kv_cache):
    model = GPT(Config(vocab_size=61, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32)).eval()
    prompt = torch.randint(0, 61, (2, 4))
    text = generate(model, prompt, 3 * BLOCK, temperature=0.0, kv_cache=kv_cache, sinks=2)
    logits = torch.stack(list(forced_logits(model, text, kv_cache, sinks=2, prompt_length=4)), dim=1)
    assert logits.shape == (2, 3 * BLOCK + 1, model.config.padded_vocab_size)  # after prefixes of 4 .. len(text)
    assert torch.equal(logits[:, :-1].argmax(-1), text[:, 4:])  # greedy generation picked the argmax of these
    if kv_cache == "reprefill":  # what the model computes over the last block_size tokens
        with torch.no_grad():
            expected = model(text[:, -BLOCK:])[:, -1]
        torch.testing.assert_close(logits[:, -1], expected, rtol=1e-5, atol=1e-5)
