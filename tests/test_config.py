import pytest

from lit_gpt.config import PRESETS, Config, ConfigError
from lit_gpt.model import GPT


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_presets_build_and_count_honestly(name):
    config = Config.from_name(name, vocab_size=65)
    assert GPT(config).num_params() == config.num_params()


def test_gpt2_preset_is_124m():
    # Hugging Face's GPT2LMHeadModel has 124,439,808 parameters (tied head, learned positions, biases).
    assert Config.from_name("gpt2").num_params() == 124_439_808


def test_medium_preset_is_not_2_3m_with_a_bpe_vocabulary():
    # The old design notes claimed "2-3M parameters" for 384/12/12/512; with GPT-2's vocabulary it is ~40.5M.
    config = Config.from_name("medium", vocab_size=50257)
    assert config.num_params() == 40_541_952
    assert GPT(config).num_params() == config.num_params()


def test_all_presets_are_valid():
    for name in PRESETS:
        Config.from_name(name)


def test_derived_fields():
    config = Config(n_embd=128, n_head=4, vocab_size=50257, padding_multiple=64)
    assert config.head_size == 32
    assert config.n_kv_head == 4
    assert config.intermediate_size == 384  # 2/3 * 4 * 128 = 341.3, rounded up to a multiple of 64
    assert config.padded_vocab_size == 50304
    assert Config(mlp="gelu", n_embd=64).intermediate_size == 256


def test_to_dict_round_trip():
    config = Config(n_kv_head=2, position_embedding="learned", dropout=0.1)
    assert Config(**config.to_dict()) == config
    switched = Config(qk_norm=True, mlp="relu2", zero_init_proj=True, logit_softcap=15.0, value_residual=True)
    assert Config(**switched.to_dict()) == switched


def test_differences_name_the_fields_that_differ_in_declaration_order():
    ours = Config(vocab_size=100, n_layer=2, n_head=4, n_embd=32)
    theirs = Config(vocab_size=100, n_layer=3, n_head=2, n_embd=32, dropout=0.1)
    assert ours.differences(ours) == []
    assert ours.differences(theirs) == ["n_layer", "n_head", "n_kv_head", "dropout"]  # n_kv_head follows n_head
    assert ours.differences(theirs, ignore=("dropout", "n_head", "n_kv_head")) == ["n_layer"]
    assert ours.differences(Config(vocab_size=101, n_layer=2, n_head=4, n_embd=32)) == ["vocab_size"]  # not derived


def test_a_config_saved_before_the_switches_loads_with_them_off():
    old = Config().to_dict()
    for key in ("qk_norm", "zero_init_proj", "logit_softcap", "value_residual"):
        del old[key]
    assert Config(**old) == Config()


def test_relu2_mlp_is_4x_wide_with_two_matrices():
    config = Config(mlp="relu2", n_embd=64, bias=False)
    assert config.intermediate_size == 256
    assert config.num_params() == Config(mlp="gelu", n_embd=64).num_params()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n_embd=100, n_head=3), "n_embd"),
        (dict(n_head=4, n_kv_head=3), "n_kv_head"),
        (dict(n_embd=24, n_head=8), "head size"),  # RoPE needs an even head size
        (dict(block_size=0), "block_size"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(norm="batchnorm"), "norm"),
        (dict(mlp="relu"), "mlp"),
        (dict(position_embedding="alibi"), "position_embedding"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(init="orthogonal"), "init"),
        (dict(qk_norm="yes"), "qk_norm"),
        (dict(zero_init_proj=1), "zero_init_proj"),
        (dict(value_residual=None), "value_residual"),
        (dict(logit_softcap=0.0), "logit_softcap"),
        (dict(logit_softcap=-15.0), "logit_softcap"),
        (dict(logit_softcap="30"), "logit_softcap"),
    ],
)
def test_bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Config(**kwargs)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'gpt5'"):
        Config.from_name("gpt5")


@pytest.mark.parametrize("name", ["llama-124m", "llama-350m", "llama-1b"])
def test_llama_presets_count_what_transformers_counts(name):
    """The exact parameter count of the Hugging Face Llama of the same shape (built on the meta device)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lit_gpt.hf import config_to_hf
    from lit_gpt.tokenizer import Tokenizer

    config = Config.from_name(name)
    hf = config_to_hf(config, Tokenizer(chars="ab"))
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf))
    assert config.num_params() == sum(p.numel() for p in model.parameters())
