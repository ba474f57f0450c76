"""The chunked cross-entropy: the same loss and gradients as the whole-logits loss (tied or untied head, logit soft
cap, ignored targets), with no (B, T, V) tensor saved for the backward pass."""

import pytest
import torch

from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT
from lit_gpt.train.loss import batch_loss, chunked_next_token_loss, next_token_loss
from lit_gpt.train.module import LitGPT


def losses_and_grads(model: GPT, x: torch.Tensor, y: torch.Tensor, chunk_size: int | None):
    model.zero_grad()
    loss = batch_loss(model, (x, y), chunk_size)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "switches",
    [{}, {"tie_embeddings": False}, {"logit_softcap": 3.0}, {"tie_embeddings": False, "logit_softcap": 1.5}],
    ids=["tied", "untied", "softcap", "untied-softcap"],
)
@pytest.mark.parametrize("chunk_size", [1, 5, 32, 1000])
def test_chunks_give_the_loss_and_gradients_of_the_whole_logits(tiny_config, switches, chunk_size):
    model = GPT(tiny_config.replace(**switches))
    x = torch.randint(0, 96, (2, 16))
    y = torch.randint(0, 96, (2, 16))
    y[0, :3] = IGNORE_INDEX  # ignored targets count in neither the sum nor the mean
    y[1, -1] = IGNORE_INDEX
    whole, whole_grads = losses_and_grads(model, x, y, None)
    chunked, chunked_grads = losses_and_grads(model, x, y, chunk_size)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_no_tensor_of_the_whole_logits_is_saved_for_the_backward(tiny_config):
    model = GPT(tiny_config.replace(vocab_size=512))
    x, y = torch.randint(0, 512, (2, 16)), torch.randint(0, 512, (2, 16))
    V = model.config.padded_vocab_size

    def logit_rows_saved(chunk_size: int | None) -> int:
        """The most rows of a vocabulary-wide tensor (logits, log-softmax) that the forward pass saves for the backward
        pass."""
        rows = []
        pack = lambda t: rows.append(t.numel() // V if t.dim() and t.shape[-1] == V else 0) or t  # noqa: E731
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            batch_loss(model, (x, y), chunk_size).backward()
        return max(rows)

    assert logit_rows_saved(None) == x.numel()  # B x T rows of V logits
    assert logit_rows_saved(4) == 0  # none: each chunk's are computed again in its backward


def test_the_model_inputs_of_a_batch_reach_the_model(tiny_config):
    model = GPT(tiny_config)
    x, y = torch.randint(0, 96, (1, 16)), torch.randint(0, 96, (1, 16))
    documents = torch.tensor([[0] * 8 + [1] * 8])
    plain = batch_loss(model, (x, y), 4)
    masked = batch_loss(model, (x, y, {"documents": documents}), 4)
    torch.testing.assert_close(masked, batch_loss(model, (x, y, {"documents": documents}), None))
    assert not torch.allclose(masked, plain)  # the second document no longer sees the first


def test_lit_gpt_trains_and_validates_with_chunks_like_without(tiny_config):
    torch.manual_seed(0)
    whole = LitGPT(tiny_config)
    chunked = LitGPT(tiny_config, loss_chunk_size=7)
    chunked.model.load_state_dict(whole.model.state_dict())
    batch = (torch.randint(0, 96, (2, 16)), torch.randint(0, 96, (2, 16)))
    whole._logging_step = chunked._logging_step = lambda: False  # no Trainer attached to log to
    torch.testing.assert_close(chunked.training_step(batch, 0), whole.training_step(batch, 0))
    with torch.no_grad():
        expected = next_token_loss(whole.model(batch[0]), batch[1])
        hidden = chunked.model.hidden_states(batch[0])
        torch.testing.assert_close(chunked_next_token_loss(hidden, batch[1], chunked.model.head, 7), expected)


def test_a_chunk_size_below_one_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="model.loss_chunk_size must be >= 1"):
        LitGPT(tiny_config, loss_chunk_size=0)
    with pytest.raises(ConfigError, match="chunk size must be >= 1"):
        chunked_next_token_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), lambda h: h, 0)
