"""KV-cache generation equals recomputing the whole sequence: tokens, logits, padding, sliding windows, stopping; and
the masks and layouts of ``lit_gpt.kv_cache`` follow their definitions."""

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.generate import generate, iter_tokens, left_pad
from lit_gpt.kv_cache import attention_layout, cached_mask, window_mask
from lit_gpt.model import GPT

STYLES = {
    "llama": {},
    "gqa": dict(n_kv_head=2),
    "sliding_window": dict(sliding_window=5),
    "gpt2_style": dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"),
    "logit_softcap": dict(logit_softcap=1.0),
    "value_residual_gqa": dict(value_residual=True, n_kv_head=2),
}


def tiny_model(**overrides) -> GPT:
    config = Config(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, **overrides)
    return GPT(config).eval()


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("batch_size, prompt_length", [(1, 1), (1, 9), (3, 4), (2, 23)])
def test_cached_greedy_tokens_equal_recomputation(style, batch_size, prompt_length):
    model = tiny_model(**STYLES[style])
    idx = torch.randint(0, 61, (batch_size, prompt_length))
    cached = generate(model, idx, 30, temperature=0.0, use_cache=True)  # runs past block_size 24
    recomputed = generate(model, idx, 30, temperature=0.0, use_cache=False)
    assert cached.shape == (batch_size, prompt_length + 30)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("style", STYLES)
def test_prefill_and_decode_logits_match_the_full_forward(style):
    model = tiny_model(**STYLES[style])
    idx = torch.randint(0, 61, (2, 20))
    with torch.no_grad():
        full = model(idx)
        model.setup_kv_cache(2, 20)
        parts = [model(idx[:, :7], input_pos=torch.arange(7))]
        parts += [model(idx[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(7, 20)]
        model.clear_kv_cache()
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", STYLES)
def test_left_padded_batch_equals_each_prompt_alone(style):
    model = tiny_model(**STYLES[style])
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15, 16, 17]]
    idx, pad = left_pad(prompts, pad_id=0)
    assert pad.tolist() == [5, 0, 7, 3] and idx.shape == (4, 8)
    batched = generate(model, idx, 25, temperature=0.0, pad=pad)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), 25, temperature=0.0)
        assert torch.equal(batched[row, 8:], alone[0, len(prompt) :]), f"row {row}"


def test_seeded_sampling_with_cache_equals_without():
    model = tiny_model()
    idx = torch.randint(0, 61, (2, 5))
    kw = dict(temperature=1.0, top_k=20, top_p=0.9)
    a = generate(model, idx, 15, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(model, idx, 15, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_stops_at_end_of_text_per_row():
    model = tiny_model()
    idx = torch.randint(0, 61, (3, 4))
    free = torch.stack(list(iter_tokens(model, idx, 12, temperature=0.0)), dim=1)  # (3, 12), no end-of-text id
    eos = free[0, 2].item()  # call what row 0 says at step 2 "end of text"
    stopped = torch.stack(list(iter_tokens(model, idx, 12, temperature=0.0, eos_id=eos)), dim=1)
    expected, ends = [], []
    for row in free.tolist():
        end = row.index(eos) if eos in row else len(row)
        expected.append(row[:end] + [eos] * (len(row) - end))
        ends.append(end)
    n_steps = 12 if ends.count(12) else max(ends) + 1  # iteration ends once every row has said eos
    assert stopped.tolist() == [row[:n_steps] for row in expected]
    assert ends[0] <= 2


def test_sliding_window_limits_what_each_position_sees():
    model = tiny_model(sliding_window=4)
    idx = torch.randint(0, 61, (1, 20))
    changed = idx.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 61
    with torch.no_grad():
        a, b = model(idx), model(changed)
    # position 5 reaches positions 5..8 directly, and through the 2 layers up to 5 + 2 * 3 = 11
    torch.testing.assert_close(a[:, 12:], b[:, 12:], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:12], b[:, 5:12])
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)


def test_cache_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="needs a KV cache"):
        model(torch.zeros(1, 3, dtype=torch.long), input_pos=torch.arange(3))
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.setup_kv_cache(1, 25)
    with pytest.raises(ValueError, match="need the KV cache"):
        generate(model, torch.zeros(2, 3, dtype=torch.long), 2, pad=torch.tensor([1, 0]), use_cache=False)


def test_masks_follow_their_definitions():
    input_pos, S, window, pad = torch.tensor([3, 4, 5]), 6, 3, torch.tensor([0, 2, 4])
    mask = cached_mask(input_pos, S, window, pad)  # (B, 1, T, S)
    assert mask.shape == (3, 1, 3, 6)
    for b in range(3):
        for t, i in enumerate(input_pos.tolist()):
            for j in range(S):
                # causal, not padding, within the window; a padding query sees itself
                expected = (pad[b] <= j <= i and i - j < window) or j == i
                assert bool(mask[b, 0, t, j]) == expected, (b, i, j)
    full = window_mask(6, window, torch.device("cpu"))  # (T, T): the same rule without a cache or padding
    assert torch.equal(full, cached_mask(torch.arange(6), 6, window).reshape(6, 6))


def test_attention_layout_reads_only_the_written_cache():
    cpu = torch.device("cpu")
    positions, mask, kv_length = attention_layout(4, torch.arange(4), None, None, cpu)  # prefill from position 0
    assert (positions.tolist(), mask, kv_length) == ([0, 1, 2, 3], None, None)  # plain causal over its own keys
    positions, mask, kv_length = attention_layout(1, torch.tensor([6]), None, None, cpu)  # a decode step
    assert (positions.tolist(), mask, kv_length) == ([6], None, 7)  # every written entry, no mask
    positions, mask, kv_length = attention_layout(1, torch.tensor([6]), None, torch.tensor([0, 2]), cpu)
    assert positions.tolist() == [[6], [4]] and kv_length == 7  # each row counts from its first real token
    assert mask[:, 0, 0].tolist() == [[True] * 7, [False, False] + [True] * 5]
    positions, mask, kv_length = attention_layout(8, None, 4, None, cpu)  # no cache, a window shorter than T
    assert kv_length is None and torch.equal(mask, window_mask(8, 4, cpu))
