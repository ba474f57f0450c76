import pytest
import torch

from lit_gpt.errors import ConfigError
from lit_gpt.generate import generate, sample_next
from lit_gpt.model import GPT

LOGITS = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]])  # probabilities fall with the index


def draws(n=2000, **kwargs):
    generator = torch.Generator().manual_seed(0)
    return torch.cat([sample_next(LOGITS, generator=generator, **kwargs) for _ in range(n)]).flatten()


def test_temperature_zero_is_greedy():
    logits = torch.randn(5, 100)
    assert torch.equal(sample_next(logits, temperature=0.0).flatten(), logits.argmax(-1))


@pytest.mark.parametrize("top_k", [1, 2, 3, 7])
def test_top_k_never_picks_outside_the_k_most_likely(top_k):
    picked = draws(top_k=top_k, temperature=2.0)
    assert set(picked.tolist()) == set(range(top_k))


@pytest.mark.parametrize("top_p", [0.01, 0.4, 0.75, 0.9])
def test_top_p_never_picks_outside_the_nucleus(top_p):
    probs = LOGITS.softmax(-1)[0]
    mass_before = probs.cumsum(0) - probs
    allowed = set(torch.nonzero(mass_before < top_p).flatten().tolist())
    picked = set(draws(top_p=top_p).tolist())
    assert picked <= allowed
    assert picked == allowed  # with 2000 draws every allowed token shows up
    assert 0 in allowed


def test_top_k_and_top_p_combine():
    assert set(draws(top_k=3, top_p=0.99, temperature=5.0).tolist()) == {0, 1, 2}


def test_sampling_is_deterministic_under_a_seed():
    assert torch.equal(draws(n=200), draws(n=200))
    assert not torch.equal(draws(n=200), draws(n=200, temperature=3.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.01), "top_p"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_bad_sampling_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sample_next(LOGITS, **kwargs)


def test_generate_never_samples_vocabulary_padding(tiny_config):
    from lit_gpt.config import Config

    config = tiny_config.replace(vocab_size=70, padding_multiple=64)  # ids 70..127 are padding
    model = GPT(config).eval()
    with torch.no_grad():
        model.lm_head.weight[70:] = 10.0  # make the padding rows the most likely by far
    idx = torch.zeros(2, 3, dtype=torch.long)
    out = generate(model, idx, 40, temperature=1.0, vocab_size=70, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 43) and out.max() < 70


def test_generate_slides_past_block_size(tiny_config):
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (1, tiny_config.block_size))
    out = generate(model, idx, 10, temperature=0.0)
    assert out.shape == (1, tiny_config.block_size + 10)
    assert torch.equal(out[:, : tiny_config.block_size], idx)
    # greedy continuation equals the argmax of the model over the last block_size tokens
    with torch.no_grad():
        expected = model(out[:, -tiny_config.block_size - 1 : -1])[:, -1].argmax(-1)
    assert out[0, -1] == expected[0]
