"""What a fit shows in TensorBoard beyond the losses: throughput, FLOPs and MFU, text samples, the HParams tab."""

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lit_gpt.cli import main
from lit_gpt.errors import ConfigError
from lit_gpt.flops import flops_per_token
from lit_gpt.generate import default_kv_cache, forced_logits, generate
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.train.callbacks import TextSamples, ThroughputMonitor
from lit_gpt.train.lightning_cli import build_cli
from lit_gpt.train.module import LitGPT


class ClockJump(Callback):
    """Moves ``time.perf_counter`` 1000 s ahead after every validation: a stand-in for slow work there (samples,
    checkpoints) that must not count as training time."""

    def __init__(self, monkeypatch):
        self.offset, real = 0.0, time.perf_counter
        monkeypatch.setattr(time, "perf_counter", lambda: real() + self.offset)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.offset += 1000.0


PEAK = 1e11


@pytest.fixture(scope="module")
def observed(tiny, tmp_path_factory):
    """A configs/tiny.yaml run with throughput (window 5, a given peak), samples of "ROMEO:" and the clock jumping
    1000 s after each validation; returns (the CLI after fit, its TensorBoard run folder)."""
    folder = tmp_path_factory.mktemp("observed")
    args = tiny(
        folder,
        "--trainer.limit_val_batches",
        "10",
        "--throughput.peak_flops",
        str(PEAK),
        "--throughput.window_size",
        "5",
        "--samples.prompt",
        "ROMEO:",
        "--samples.max_new_tokens",
        "30",
    )
    cli = build_cli(args[1:], run=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        cli.trainer.callbacks.append(ClockJump(monkeypatch))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, folder / "runs" / "tiny" / "version_0"


def tensorboard_run(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("stage, training", [("train", True), ("val", False)])
def test_throughput_flops_and_mfu_follow_the_flop_formula(observed, scalars, stage, training):
    cli, run = observed
    logged = scalars(run)
    config, T = cli.model.config, cli.model.config.block_size
    tokens_per_sec = dict(logged[f"{stage}/throughput/tokens_per_sec"])
    flops_per_sec, mfu = dict(logged[f"{stage}/throughput/flops_per_sec"]), dict(logged[f"{stage}/throughput/mfu"])
    assert tokens_per_sec and tokens_per_sec.keys() == flops_per_sec.keys() == mfu.keys()
    for step in tokens_per_sec:  # FLOPs per token from LitGPT.flops_per_batch; MFU against the given peak
        assert flops_per_sec[step] / tokens_per_sec[step] == pytest.approx(flops_per_token(config, T, training))
        assert mfu[step] == pytest.approx(flops_per_sec[step] / PEAK)


def test_throughput_is_logged_with_the_loss_and_shown_in_the_progress_bar(observed, scalars):
    cli, run = observed
    logged = scalars(run)
    assert "tokens/s" in cli.trainer.progress_bar_metrics
    assert [step for step, _ in logged["train/throughput/mfu"]] == [9, 19]  # every log_every_n_steps once 5 batches in
    assert [step for step, _ in logged["train/loss"]] == [9, 19]


def test_time_after_validation_is_not_training_time(observed, scalars):
    _, run = observed
    assert scalars(run)["train/throughput/time"][-1][1] < 1000  # the jumps after validation were not training time


def test_samples_are_written_after_each_validation(observed):
    _, run = observed
    events = tensorboard_run(run)
    samples = [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("samples/text_summary")]
    assert [step for step, _ in samples] == [10, 20]  # after each validation, at the optimizer step reached
    for _, text in samples:
        assert text.startswith("    ROMEO:") and len(text) > len("    ROMEO:")


def test_hparams_tab_lists_the_settings_and_metrics(observed):
    _, run = observed
    events = tensorboard_run(run)
    hparams = {tag: HParamsPluginData.FromString(c) for tag, c in events.PluginTagToContent("hparams").items()}
    experiment = hparams["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss", "val/ppl", "train/loss"]
    values = hparams["_hparams_/session_start_info"].session_start_info.hparams
    columns = [info.name for info in experiment.hparam_infos]
    assert columns[0].startswith("model/config/") and "model/learning_rate" in columns[:30]
    assert not [c for c in columns if c.startswith(("data/download_url", "data/cache_dir", "data/num_workers"))]
    assert values["model/config/n_layer"].number_value == 1
    assert values["model/learning_rate"].number_value == pytest.approx(1e-3)
    assert values["model/tokenizer/kind"].string_value == "char" and "model/tokenizer/chars" not in values
    assert values["data/batch_size"].number_value == 12 and values["trainer/precision"].string_value == "32-true"
    assert values["seed_everything"].number_value == 1337


def test_samples_are_reproducible_and_leave_the_model_and_rng_alone(tiny_config):
    tokenizer = Tokenizer.char("abcdefgh \n")
    config = tiny_config.replace(vocab_size=tokenizer.vocab_size)
    module = LitGPT(config, tokenizer=tokenizer.spec)
    samples = TextSamples(prompt="ab", max_new_tokens=12, temperature=1.0, top_k=5)
    samples.setup(Trainer(accelerator="cpu", logger=False), module, "fit")
    rng = torch.get_rng_state()
    first, second = samples.sample(module.model), samples.sample(module.model)
    assert first == second and first.startswith("ab") and len(first) > 2
    assert module.model.training and torch.equal(torch.get_rng_state(), rng)
    assert set(first) <= set("abcdefgh \n")


def test_samples_start_with_the_bos_of_a_hugging_face_tokenizer(tiny_config, hf_folder):
    tokenizer = Tokenizer.from_name(str(hf_folder("llama3")))
    module = LitGPT(tiny_config.replace(vocab_size=tokenizer.vocab_size, block_size=32), tokenizer=tokenizer.spec)
    for prompt, expected in (
        ("Once", tokenizer.document_prefix + tokenizer.encode("Once")),
        ("", tokenizer.document_prefix),
    ):
        samples = TextSamples(prompt=prompt, max_new_tokens=4)
        samples.setup(Trainer(accelerator="cpu", logger=False), module, "fit")
        assert samples._prompt_ids == expected and samples.sample(module.model).startswith(prompt)


def test_samples_are_skipped_without_tensorboard_or_tokenizer(tiny_config, tmp_path, monkeypatch):
    def never(model):
        raise AssertionError("no sample expected")

    monkeypatch.setattr(TextSamples, "sample", staticmethod(never))
    spec = Tokenizer.char("abcdefgh \n").spec
    for logger, tokenizer in ((CSVLogger(tmp_path), spec), (False, spec), (None, None)):
        trainer = Trainer(accelerator="cpu", logger=logger, default_root_dir=tmp_path)
        module = LitGPT(tiny_config.replace(vocab_size=11), tokenizer=tokenizer)
        samples = TextSamples()
        samples.setup(trainer, module, "fit")
        samples.on_validation_end(trainer, module)  # no TensorBoardLogger, or no tokenizer: nothing happens


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ThroughputMonitor(peak_flops=0.0), "throughput.peak_flops must be a positive"),
        (lambda: ThroughputMonitor(window_size=1), "throughput.window_size must be at least 2"),
        (lambda: TextSamples(temperature=-1.0), "samples.temperature must be >= 0"),
        (lambda: TextSamples(top_k=0), "samples.top_k must be >= 1"),
        (lambda: TextSamples(max_new_tokens=-1), "samples.max_new_tokens must be >= 0"),
    ],
)
def test_bad_callback_settings_raise_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_prompt_outside_the_vocabulary_is_one_error_line(fit_args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args("--samples.prompt", "ROMÉO:"))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: samples.prompt: character 'É' is not in this character-level vocabulary of 65 characters"]


def test_samples_past_block_size_use_the_generate_commands_kv_cache_policy(tiny_config):
    tokenizer = Tokenizer.char("abcdefgh \n")
    module = LitGPT(tiny_config.replace(vocab_size=tokenizer.vocab_size, block_size=8), tokenizer=tokenizer.spec)
    samples = TextSamples(prompt="ab", max_new_tokens=20, temperature=1.0)
    samples.setup(Trainer(accelerator="cpu", logger=False), module, "fit")
    text = samples.sample(module.model)
    module.model.eval()

    def continuation(policy: str, eos_id: int | None) -> list[int]:
        generator = torch.Generator().manual_seed(samples.seed)
        idx = torch.tensor([tokenizer.encode("ab")])
        out = generate(
            module.model,
            idx,
            20,
            temperature=1.0,
            generator=generator,
            vocab_size=tokenizer.vocab_size,
            eos_id=eos_id,
            kv_cache=policy,
        )[0, 2:].tolist()
        return out[: out.index(eos_id)] if eos_id in out else out

    assert default_kv_cache(module.model) == "rolling"
    assert text == "ab" + tokenizer.decode(continuation("rolling", tokenizer.eot_id))
    stream = torch.tensor([tokenizer.encode("ab") + continuation("rolling", None)])  # 22 tokens, block_size 8
    rolling, reprefill = (torch.stack(list(forced_logits(module.model, stream, p))) for p in ("rolling", "reprefill"))
    assert torch.equal(rolling[:8], reprefill[:8]) and not torch.allclose(rolling[8:], reprefill[8:])
