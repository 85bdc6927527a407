"""Every shipped YAML loads; bad keys and values name the file and key."""

from pathlib import Path

import pytest

from mlx_bluey.config import ConfigError, TrainConfig, config_keys, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_and_documents_every_key(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{path.name}: key on line {i + 1} has no comment above it"


def test_configs_exist():
    assert len(CONFIGS) >= 2


def test_command_line_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nbatch_size: 2\n")
    config = load_config(path, {"epochs": 1, "seed": None})
    assert (config.epochs, config.batch_size, config.seed) == (1, 2, 0)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key\(s\) epoch"):
        load_config(path)


def test_bad_value_says_what_to_change(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fine_tune_type: qlora\n")
    with pytest.raises(ConfigError, match="fine_tune_type must be one of lora, dora, full"):
        load_config(path)


def test_every_key_has_a_docstring():
    import inspect

    source = inspect.getsource(TrainConfig)
    for key in config_keys():
        after = source.split(f"    {key}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), key


def test_every_config_key_has_a_train_flag():
    from mlx_bluey.cli import train

    flags = {param.name for param in train.params}
    assert set(config_keys()) - {"lora_keys"} <= flags  # a list: set it in YAML


# Every impossible value is refused up front, with the key and what to change (not mid-run, not a TypeError).
BAD_VALUES = [
    ("save_every: 0\n", "save_every must be at least 1 (optimizer steps between checkpoints), not 0"),
    ("num_layers: 0\n", "num_layers must be -1 (every block) or at least 1, not 0"),
    ("num_layers: -2\n", "num_layers must be -1 (every block) or at least 1, not -2"),
    ("warmup_steps: -1\n", "warmup_steps must be at least 0 (0 = no warm-up), not -1"),
    ("val_every: -1\n", "val_every must be at least 0 (0 = never validate), not -1"),
    ("max_grad_norm: -0.5\n", "max_grad_norm must be at least 0 (0 = no clipping), not -0.5"),
    ("early_stopping_patience: -1\n", "early_stopping_patience must be at least 0 (0 = never stop early), not -1"),
    ("min_lr_ratio: 1.5\n", "min_lr_ratio must be in [0, 1] (a fraction of learning_rate), not 1.5"),
    ("min_lr_ratio: -0.1\n", "min_lr_ratio must be in [0, 1] (a fraction of learning_rate), not -0.1"),
    ("weight_decay: -0.01\n", "weight_decay must be at least 0 (0 = no decay), not -0.01"),
    (
        "learning_rate: 1.0e-4\nweight_decay: 20000\n",
        (
            "weight_decay must be below 1 / learning_rate = 10000 (each step scales the weights by 1 - learning_rate * "
            "weight_decay), not 20000.0"
        ),
    ),
    ("iters: -5\n", "iters must be at least 0 (0 = use epochs), not -5"),
    ("epochs: -1\niters: 10\n", "epochs must be at least 0 (ignored when iters > 0), not -1.0"),
    ("epochs: 0\n", "set epochs > 0 or iters >= 1"),
    ("lora_scale: 0\n", "lora_scale must be above 0 (0 switches the adapters off), not 0.0"),
    ("seed: -1\n", "seed must be at least 0, not -1"),
    ("lora_rank: " + "1" * 31 + "\n", "lora_rank must be at most 2147483647, not " + "1" * 31),
    ("learning_rate: .nan\n", "learning_rate must be a finite number, not nan"),
    ("lora_scale: .inf\n", "lora_scale must be a finite number, not inf"),
    ("lora_scale: " + "9" * 400 + "\n", "lora_scale must be a finite number, not " + "9" * 57 + "..."),
    ("lora_keys: []\n", "lora_keys must name at least one module, or be null (every linear layer)"),
    ("lora_keys: [self_attn.q_proj, ' ']\n", "lora_keys[1] must name a module, like self_attn.q_proj, not ' '"),
    ("output: ''\n", "output must name a directory, not ''"),
    ("data: '  '\n", "data must name a directory, not '  '"),
    # types, from the field annotations
    ("lora_rank: eight\n", "lora_rank must be an integer, not 'eight'"),
    ("lora_rank: true\n", "lora_rank must be an integer, not True"),
    ("batch_size: 2.0\n", "batch_size must be an integer, not 2.0"),
    ("learning_rate: [1]\n", "learning_rate must be a number, not [1]"),
    ("learning_rate: false\n", "learning_rate must be a number, not False"),
    ('progress: "yes"\n', "progress must be true or false, not 'yes'"),
    ("progress: 1\n", "progress must be true or false, not 1"),
    ("lora_keys: 5\n", "lora_keys must be a list of strings or null, not 5"),
    ("lora_keys: [self_attn.q_proj, 3]\n", "lora_keys must be a list of strings or null, not ['self_attn.q_proj', 3]"),
    ("model: 5\n", "model must be a string or null, not 5"),
    ("data:\n", "data must be a string, not None"),
    ("seed: 2024-01-01\n", "seed must be an integer, not datetime.date(2024, 1, 1)"),
    ("fine_tune_type: [lora]\n", "fine_tune_type must be a string, not ['lora']"),
    ("dtype: " + "x" * 100 + "\n", "dtype must be one of auto, float32, bfloat16, float16, not '" + "x" * 56 + "..."),
]


@pytest.mark.parametrize("text,message", BAD_VALUES, ids=[t.split(":")[0] for t, _ in BAD_VALUES])
def test_impossible_value_names_file_key_and_fix(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {message}"


# What YAML itself can get wrong is named with its line (and key).
BAD_FILES = [
    (b"epochs: 2\nseed: 1\nepochs: 3\n", "3:epochs: given twice (also on line 1); keep one"),
    (b"seed: 2020-13-45\n", "1:seed: cannot read this value: month must be in 1..12"),
    (
        b"seed: " + b"1" * 5000 + b"\n",
        (
            "1:seed: cannot read this value: Exceeds the limit (4300 digits) for integer string conversion: "
            "value has 5000 digits"
        ),
    ),
    (b"epochs: 2\n1: x\n", "2: a key must be a name, not 1"),
    (b'data: "a\\0b"\n', "1:data: contains a NUL character (\\0)"),
    (b'lora_keys: ["\\ud800"]\n', "1:lora_keys: contains a lone surrogate \\ud800 (not valid Unicode)"),
    (b"epochs: 2\nseed: \xff\n", "2: not valid UTF-8 (byte 6 of the line)"),
]


@pytest.mark.parametrize("data,message", BAD_FILES)
def test_bad_yaml_names_file_line_and_key(tmp_path, data, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}:{message}"


def test_unreadable_yaml_is_a_config_error(tmp_path):
    (tmp_path / "deep.yaml").write_text("[" * 5000)
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "code.yaml").write_text("seed: !!python/object:os.system x\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: not valid YAML: nested too deeply"):
        load_config(tmp_path / "deep.yaml")
    with pytest.raises(ConfigError, match=r"dir\.yaml: cannot read the config file: Is a directory"):
        load_config(tmp_path / "dir.yaml")
    with pytest.raises(ConfigError, match=r"code\.yaml:1:seed: not valid YAML: could not determine a constructor"):
        load_config(tmp_path / "code.yaml")


def test_numbers_are_read_as_a_user_means_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbflearning_rate: 3e-4\nlora_scale: 16\nmin_lr_ratio: 1\nmax_grad_norm: 1e300\n")
    config = load_config(path)  # a BOM is fine; 3e-4 is a number (PyYAML alone reads YAML 1.1's string "3e-4")
    assert (config.learning_rate, config.lora_scale, config.min_lr_ratio) == (3e-4, 16.0, 1.0)
    assert config.max_grad_norm == 1e300  # huge, and accepted: it only means "never clip"
    assert type(config.lora_scale) is float and type(config.min_lr_ratio) is float


def test_command_line_values_are_checked_too():
    with pytest.raises(ConfigError, match=r"^command line: save_every must be at least 1"):
        load_config(None, {"save_every": 0})
    with pytest.raises(ConfigError, match=r"^command line: lora_rank must be an integer, not 'x'"):
        load_config(None, {"lora_rank": "x"})


def test_a_huge_integer_in_python_gets_a_short_message():
    with pytest.raises(ConfigError, match=r"^lora_rank must be at most 2147483647, not an integer of 16610 bits$"):
        TrainConfig(lora_rank=10**5000)
    with pytest.raises(ConfigError, match=r"^num_layers must be -1 \(every block\) or at least 1, not an integer"):
        TrainConfig(num_layers=-(10**5000))


def test_every_config_key_but_the_list_is_a_train_option_with_its_docstring_as_help(monkeypatch):
    from click.testing import CliRunner

    import mlx_bluey.config
    from mlx_bluey.cli import cli, train

    options = {p.name: p for p in train.params}
    assert set(options) == (set(config_keys()) - {"lora_keys"}) | {"config_path", "resume", "overwrite"}
    given = {}

    def load(path, overrides):
        given.update(overrides)
        raise ConfigError("stop here")

    monkeypatch.setattr(mlx_bluey.config, "load_config", load)
    result = CliRunner().invoke(cli, ["train", "--lora-rank", "4", "--no-progress", "--method", "orpo"])
    assert result.exit_code == 1 and "stop here" in result.output
    # options not given are None: the config file's value, else TrainConfig's default, stands
    assert {key: value for key, value in given.items() if value is not None} == {
        "lora_rank": 4,
        "progress": False,
        "method": "orpo",
    }
    assert options["lora_rank"].help == (
        "Adapter rank r: each adapted d_in x d_out matrix gains r * (d_in + d_out) parameters."
    )
    assert options["batch_size"].help == "Conversations per micro-batch; larger ones are bucketed by length."
    assert options["progress"].secondary_opts == ["--no-progress"]
    assert list(options["method"].type.choices) == ["sft", "dpo", "simpo", "orpo"]
