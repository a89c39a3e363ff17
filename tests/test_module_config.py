"""DEP's and PPlug's module configs share one base (``dep_eval.module_config.ModuleConfig``):
the encoder/LLM identity and training-prompt fields, their checks and the JSON round trip."""

from __future__ import annotations

import pytest
from dep_eval.baselines.pplug.config import PPlugModuleConfig
from dep_eval.baselines.pplug.module import PPlugModule

from dep_eval.checkpoint import SHIPPED_DIR, read_config
from dep_eval.dep.config import DEPConfig
from dep_eval.dep.module import DEPModule
from dep_eval.module_config import ModuleConfig

SHIPPED = [
    (DEPModule, "dep-smollm2-minilm"),
    (DEPModule, "dep-lora-smollm2-minilm"),
    (PPlugModule, "pplug-smollm2-minilm"),
]


@pytest.mark.parametrize(("module_class", "folder"), SHIPPED)
def test_shipped_checkpoints_read_and_round_trip(module_class: type, folder: str) -> None:
    config = read_config(module_class, SHIPPED_DIR / folder)
    assert isinstance(config, ModuleConfig) and config.llm_hidden_size == 576
    assert type(config).from_dict(config.to_dict()) == config


@pytest.mark.parametrize("config_class", [DEPConfig, PPlugModuleConfig])
def test_both_configs_check_the_shared_fields_alike(config_class: type) -> None:
    with pytest.raises(ValueError, match="field 'encoder_dim' must be in 1..65536, got 0"):
        config_class(encoder_dim=0)
    with pytest.raises(ValueError, match="field 'llm_name' must be a non-empty string"):
        config_class(llm_name="")
    with pytest.raises(ValueError, match="field 'trained_prompt.system' must be in"):
        config_class(trained_prompt={"system": 0})
    with pytest.raises(ValueError, match=r"field 'config' has unknown keys \['colour'\]"):
        config_class.from_dict({**config_class().to_dict(), "colour": "red"})
