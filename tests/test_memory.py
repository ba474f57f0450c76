"""The training-memory estimate: what each strategy divides, and what gradient checkpointing saves (the comparison
with measured peaks is bench/memory_estimate.py's, recorded in docs/benchmarks.md)."""

import pytest

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.memory import activation_bytes, estimate_memory


@pytest.fixture
def config():
    return Config.from_name("medium", vocab_size=50257)


def test_block_params_add_up_to_the_model(config):
    without_blocks = config.num_params() - config.n_layer * config.block_params()
    assert without_blocks == config.padded_vocab_size * config.n_embd + config.n_embd  # tied embedding + final norm


def test_one_device_holds_four_copies_of_the_state_in_float32(config):
    estimate = estimate_memory(config, "single", batch_size=1)
    P = config.num_params()
    assert (estimate.weights, estimate.gradients, estimate.optimizer) == (4 * P, 4 * P, 8 * P)


@pytest.mark.parametrize(
    "strategy, divided",
    [("zero1", {"optimizer"}), ("zero2", {"gradients", "optimizer"}), ("zero3", {"weights", "gradients", "optimizer"})],
)
def test_zero_stages_divide_what_their_papers_say(config, strategy, divided):
    four, eight = estimate_memory(config, strategy, devices=4), estimate_memory(config, strategy, devices=8)
    for part in ("weights", "gradients", "optimizer"):
        assert (getattr(eight, part) < getattr(four, part)) == (part in divided), part
    assert eight.activations == four.activations  # data parallelism keeps the per-device batch


def test_tensor_parallelism_divides_the_blocks_not_the_embeddings(config):
    one, two = estimate_memory(config, "single"), estimate_memory(config, "tp", devices=2)
    shared = config.num_params() - config.n_layer * config.block_params()
    assert two.weights == (shared + config.n_layer * config.block_params() // 2) * 4
    assert two.activations < one.activations


def test_gradient_checkpointing_keeps_one_input_per_block(config):
    small_vocabulary = config.replace(vocab_size=96)  # so the blocks dominate
    kept = activation_bytes(small_vocabulary, 8, 512, gradient_checkpointing=True)
    everything = activation_bytes(small_vocabulary, 8, 512)
    assert kept < everything / 4
    assert activation_bytes(small_vocabulary, 8, 512, "bf16-mixed") < everything  # 2-byte activations


def test_ddp_adds_a_bucket_copy_of_the_gradients(config):
    assert estimate_memory(config, "ddp", devices=2).gradients == 2 * estimate_memory(config, "single").gradients


@pytest.mark.parametrize(
    "kwargs, message",
    [({"strategy": "pipeline"}, "unknown strategy 'pipeline'"), ({"devices": 0}, "devices must be >= 1")],
)
def test_bad_arguments(config, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        estimate_memory(config, **kwargs)


def test_the_chunked_loss_keeps_one_chunk_of_logits(config):
    """At a long context the logits dominate: chunking the loss leaves one chunk's, whatever the sequence length."""
    V = config.padded_vocab_size
    whole = activation_bytes(config, 1, 8192, gradient_checkpointing=True)
    chunked = activation_bytes(config, 1, 8192, gradient_checkpointing=True, loss_chunk_size=1024)
    assert whole - chunked == 4 * (8192 - 1024) * V * 4
    assert activation_bytes(config, 1, 512, loss_chunk_size=1024) == activation_bytes(config, 1, 512)  # one chunk
    plain = estimate_memory(config, batch_size=1, block_size=8192)
    both = estimate_memory(config, batch_size=1, block_size=8192, gradient_checkpointing=True, loss_chunk_size=1024)
    assert plain.activations > 8 * both.activations
