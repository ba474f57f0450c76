"""Continuous batching (lit_gpt.batching, lit_gpt.engine): requests that join and leave a running batch decode as
lit_gpt.generate decodes each of them alone."""

from __future__ import annotations

import time

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.engine import Engine, Sampling
from lit_gpt.errors import ConfigError
from lit_gpt.generate import generate
from lit_gpt.model import GPT

CONFIGS = {
    "llama": Config(vocab_size=96, block_size=48, n_layer=2, n_head=4, n_embd=32),
    "gqa-qknorm": Config(vocab_size=96, block_size=48, n_layer=2, n_head=4, n_embd=32, n_kv_head=2, qk_norm=True),
    "gpt2": Config(
        vocab_size=96,
        block_size=48,
        n_layer=2,
        n_head=4,
        n_embd=32,
        position_embedding="learned",
        norm="layernorm",
        mlp="gelu",
        bias=True,
    ),
}
LENGTHS = [(5, 10), (12, 20), (3, 40), (20, 15), (7, 30), (1, 45), (9, 25), (30, 17)]  # (prompt, max_tokens)


class Collect:
    """An ``emit`` that records tokens and the finish reason."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.reason: str | None = None

    def __call__(self, token, reason) -> None:
        if token is None:
            assert self.reason is None, "a request finishes once"
            self.reason = reason
        else:
            assert self.reason is None, "no token after the finish"
            self.tokens.append(token)


def run_all(engine: Engine) -> None:
    for _ in range(10_000):
        if not engine.pending():
            return
        engine.step()
    raise AssertionError("the engine did not drain")


@pytest.mark.parametrize("name", CONFIGS)
def test_staggered_requests_decode_as_generate_decodes_each_alone(name):
    model = GPT(CONFIGS[name]).eval()
    prompts = [torch.randint(0, 96, (n,)).tolist() for n, _ in LENGTHS]
    want = [
        generate(model, torch.tensor([p]), m, temperature=0.0)[0, len(p) :].tolist()
        for p, (_, m) in zip(prompts, LENGTHS)
    ]
    engine = Engine(model, max_batch_size=3)  # fewer slots than requests: some wait, rows leave and are reused
    outs = [Collect() for _ in prompts]
    submit = lambda i: engine.submit(prompts[i], Sampling(max_tokens=LENGTHS[i][1], temperature=0.0), outs[i])
    submit(0)
    engine.step(), engine.step()
    for i in (1, 2, 3):
        submit(i)
    for _ in range(5):
        engine.step()
    for i in range(4, len(prompts)):
        submit(i)
    run_all(engine)
    assert [o.tokens for o in outs] == want
    assert [o.reason for o in outs] == ["length"] * len(prompts)
    assert engine.cache.rows == 0


def test_a_seeded_request_samples_as_generate_does_under_the_same_seed():
    model = GPT(CONFIGS["llama"]).eval()
    prompt = torch.randint(0, 96, (6,)).tolist()
    options = dict(temperature=0.9, top_k=20, top_p=0.95)
    want = generate(model, torch.tensor([prompt]), 30, generator=torch.Generator().manual_seed(7), **options)
    out, other = Collect(), Collect()
    engine = Engine(model, max_batch_size=4)
    engine.submit(prompt, Sampling(max_tokens=30, seed=7, **options), out)
    engine.submit(prompt[:3], Sampling(max_tokens=30, temperature=1.0, seed=1), other)  # a neighbour in the batch
    run_all(engine)
    assert out.tokens == want[0, len(prompt) :].tolist()


def test_stop_ids_end_a_request_and_cancel_frees_its_slot():
    model = GPT(CONFIGS["llama"]).eval()
    prompt = [1, 2, 3]
    greedy = generate(model, torch.tensor([prompt]), 8, temperature=0.0)[0, 3:].tolist()
    engine = Engine(model, max_batch_size=2)
    stopped, cancelled, waiting = Collect(), Collect(), Collect()
    engine.submit(prompt, Sampling(max_tokens=8, temperature=0.0, stop_ids=(greedy[2],)), stopped)
    doomed = engine.submit(prompt, Sampling(max_tokens=40, temperature=0.0), cancelled)
    engine.submit(prompt, Sampling(max_tokens=4, temperature=0.0), waiting)  # waits for a free slot
    engine.step()
    assert len(engine.waiting) == 1  # both slots were taken when the step began
    doomed.cancel()
    run_all(engine)
    assert stopped.tokens == greedy[: greedy.index(greedy[2])] and stopped.reason == "stop"
    assert cancelled.reason == "cancelled" and len(cancelled.tokens) < 40
    assert waiting.tokens == greedy[:4] and waiting.reason == "length"


def test_the_background_thread_serves_requests_until_stopped():
    model = GPT(CONFIGS["llama"]).eval()
    engine = Engine(model, max_batch_size=2)
    engine.start()
    outs = [Collect() for _ in range(5)]
    done = []
    for out in outs:
        engine.submit(
            [4, 5, 6], Sampling(max_tokens=12, temperature=0.0), lambda t, r, out=out: (out(t, r), r and done.append(r))
        )
    for _ in range(2000):
        if len(done) == 5:
            break
        time.sleep(0.01)
    engine.stop()
    assert [o.reason for o in outs] == ["length"] * 5
    assert len({tuple(o.tokens) for o in outs}) == 1


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_quantized_model_batches_as_it_generates(mode):
    pytest.importorskip("torchao", reason='torchao is not installed: pip install -e ".[quant]"')
    from lit_gpt.quantize import quantize

    model = GPT(Config(vocab_size=128, block_size=48, n_layer=2, n_head=4, n_embd=128)).eval()
    quantize(model, mode, 32)
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9] * 12]
    want = [generate(model, torch.tensor([p]), 12, temperature=0.0)[0, len(p) :].tolist() for p in prompts]
    engine = Engine(model, max_batch_size=2)
    outs = [Collect() for _ in prompts]
    for prompt, out in zip(prompts, outs):
        engine.submit(prompt, Sampling(max_tokens=12, temperature=0.0), out)
    run_all(engine)
    assert [o.tokens for o in outs] == want


@pytest.mark.parametrize(
    "prompt, sampling, message",
    [
        ([], Sampling(max_tokens=4), "no tokens"),
        ([1] * 40, Sampling(max_tokens=9), "context of 48"),
        ([1], Sampling(max_tokens=0), "max_tokens"),
        ([1], Sampling(max_tokens=4, temperature=-1.0), "temperature"),
        ([1], Sampling(max_tokens=4, top_p=1.5), "top_p"),
    ],
)
def test_requests_that_cannot_run_are_refused(prompt, sampling, message):
    engine = Engine(GPT(CONFIGS["llama"]), max_batch_size=2)
    with pytest.raises(ConfigError, match=message):
        engine.submit(prompt, sampling, Collect())
    assert engine.pending() == 0
