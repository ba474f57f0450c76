"""Document masking: no attention across end-of-text inside a window (the next document's logits do not depend on
the earlier one's tokens), positions restarting per document, the dense and FlexAttention masks agreeing, the data
module adding document ids to every batch, exact validation under the mask, and the error for a one-document corpus."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from lit_gpt.attention import attend, document_mask
from lit_gpt.config import Config
from lit_gpt.data.windows import IGNORE_INDEX, ValidationWindows, document_inputs
from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT
from lit_gpt.train.datamodule import TextDataModule
from lit_gpt.train.module import LitGPT

EOT = 95


def window_of_three_documents() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (1, 16): a cut document, then two documents that each begin with end-of-text; and their ids."""
    x = torch.randint(0, 90, (1, 16))
    x[0, 5] = x[0, 11] = EOT
    return x, document_inputs(x, EOT)["documents"]


def test_document_ids_and_positions_count_from_each_end_of_text():
    x = torch.tensor([[7, 7, EOT, 7, 7, 7, EOT, EOT, 7]])
    inputs = document_inputs(x, EOT, reset_positions=True)
    assert inputs["documents"].tolist() == [[0, 0, 1, 1, 1, 1, 2, 3, 3]]
    assert inputs["positions"].tolist() == [[0, 1, 0, 1, 2, 3, 0, 0, 1]]
    assert set(document_inputs(x, EOT)) == {"documents"}


@pytest.mark.parametrize("switches", [{}, {"sliding_window": 4}, {"gradient_checkpointing": True}])
def test_the_next_documents_logits_ignore_the_earlier_ones_tokens(tiny_config, switches):
    model = GPT(tiny_config.replace(**switches)).train()  # dropout 0: training mode exercises checkpointing
    x, documents = window_of_three_documents()
    changed = x.clone()
    changed[0, 6:11] = (changed[0, 6:11] + 1) % 90  # the middle document, after its end-of-text
    masked, masked_changed = model(x, documents=documents), model(changed, documents=documents)
    torch.testing.assert_close(masked_changed[:, 11:], masked[:, 11:], rtol=0, atol=0)  # the last document
    torch.testing.assert_close(masked_changed[:, :6], masked[:, :6], rtol=0, atol=0)  # and everything before
    assert not torch.allclose(masked_changed[:, 6:11], masked[:, 6:11])
    assert not torch.allclose(model(changed)[:, 11:], model(x)[:, 11:])  # without the mask they change


def test_with_positions_restarted_a_document_is_read_as_if_alone(tiny_config):
    model = GPT(tiny_config).eval()
    x, _ = window_of_three_documents()
    with torch.no_grad():
        packed = model(x, **document_inputs(x, EOT, reset_positions=True))
        torch.testing.assert_close(packed[:, 11:], model(x[:, 11:]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed[:, 5:11], model(x[:, 5:11]), rtol=1e-5, atol=1e-5)
        learned = GPT(tiny_config.replace(position_embedding="learned")).eval()
        packed = learned(x, **document_inputs(x, EOT, reset_positions=True))
        torch.testing.assert_close(packed[:, 11:], learned(x[:, 11:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_the_flex_attention_block_mask_equals_the_dense_mask(window):
    pytest.importorskip("torch.nn.attention.flex_attention")
    documents = torch.tensor([[0] * 40 + [1] * 50 + [2] * 38, [0] * 128])  # (2, 128): one block of 128
    q, k, v = torch.randn(2, 4, 128, 16), torch.randn(2, 2, 128, 16), torch.randn(2, 2, 128, 16)
    with torch.no_grad():  # FlexAttention runs on CPU without gradients only
        dense = attend(q, k, v, document_mask(documents, window), is_causal=False)
        flex = attend(q, k, v, document_mask(documents, window, flex=True), is_causal=False)
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)
    assert document_mask(documents, window).shape == (2, 1, 128, 128)


@pytest.fixture
def stories(tmp_path):
    """A corpus of 60 short documents joined by end-of-text separators, and its validation copy."""
    rng = np.random.default_rng(0)
    words = ["the cat", "a dog", "sat", "ran home", "on the mat", "and slept", "happily", "in the sun"]
    docs = [" ".join(rng.choice(words, size=rng.integers(3, 9))) + "." for _ in range(60)]
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(docs))
    (tmp_path / "val.txt").write_text("<|endoftext|>".join(docs[::-1][:20]))
    return tmp_path


def data_module(folder, **settings) -> TextDataModule:
    defaults = dict(tokenizer="char", separator="<|endoftext|>", block_size=32, batch_size=4, val_batch_size=5)
    paths = dict(path=str(folder / "train.txt"), val_path=str(folder / "val.txt"), cache_dir=str(folder / "c"))
    return TextDataModule(**paths, **{**defaults, **settings})


def test_batches_carry_document_ids_and_validation_stays_exact(stories):
    dm = data_module(stories, document_mask=True, reset_positions=True)
    dm.prepare_data()
    dm.setup("fit")
    eot = dm.eot_id
    assert eot == dm.vocab_size - 1  # the char vocabulary's end-of-text id
    x, y = next(iter(dm.train_dataloader()))
    x2, y2, inputs = dm.on_after_batch_transfer((x, y), 0)
    assert x2 is x and set(inputs) == {"documents", "positions"}
    assert torch.equal(inputs["documents"], (x == eot).long().cumsum(1))

    config = Config(vocab_size=dm.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    module = LitGPT(config, tokenizer=dm.tokenizer_spec)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    masked = trainer.validate(module, datamodule=dm)[0]["val/loss"]
    total, count = 0.0, 0
    with torch.no_grad():  # every target once, each window under its own document mask
        for x, y in ValidationWindows(dm.val_tokens[0], 32):
            logits = module.model(x[None], **document_inputs(x[None], eot, reset_positions=True))[0]
            total += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((y != IGNORE_INDEX).sum())
    assert count == len(dm.val_tokens[0]) - 1
    assert masked == pytest.approx(total / count, rel=1e-5)
    plain = trainer.validate(module, datamodule=data_module(stories))[0]["val/loss"]
    assert plain != pytest.approx(masked, rel=1e-4)


def test_a_corpus_of_one_document_has_nothing_to_mask(stories):
    (stories / "one.txt").write_text("a single document without any separator, " * 20)
    one = dict(path=str(stories / "one.txt"), cache_dir=str(stories / "c1"))
    dm = TextDataModule(**one, tokenizer="char", block_size=16, document_mask=True)
    dm.prepare_data()
    with pytest.raises(ConfigError, match="data.document_mask needs documents separated by end-of-text tokens"):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="data.reset_positions restarts positions"):
        data_module(stories, reset_positions=True)


def test_the_streaming_module_adds_document_ids_too(stories, tmp_path):
    pytest.importorskip("litdata", reason='litdata is an optional extra: pip install -e ".[stream]"')
    from lit_gpt.data.litdata_export import export_litdata
    from lit_gpt.data.prepare import prepare
    from lit_gpt.data.settings import Corpus
    from lit_gpt.train.streaming import StreamingTextDataModule

    corpus = Corpus(str(stories / "train.txt"), val_path=str(stories / "val.txt"), separator="<|endoftext|>")
    meta = prepare(corpus, "char", tmp_path / "cache")
    export_litdata(str(tmp_path / "cache"), meta, str(tmp_path / "export"), chunk_tokens=512, num_workers=1)
    dm = StreamingTextDataModule(input_dir=str(tmp_path / "export"), block_size=32, batch_size=4, document_mask=True)
    dm.setup("fit")
    assert dm.eot_id == meta["vocab_size"] - 1
    x, y = next(iter(dm.val_dataloader()))
    _, _, inputs = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(inputs["documents"], (x == dm.eot_id).long().cumsum(1)) and inputs["documents"].max() > 0
