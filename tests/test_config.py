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
