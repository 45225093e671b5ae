"""kit.models: LoRA targets across architectures."""
import pytest


@pytest.mark.parametrize("family,expected", [
    ("phi", ["dense", "fc1", "fc2", "k_proj", "q_proj", "v_proj"]),
    ("llama", ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
])
def test_default_targets_are_every_linear_projection(family, expected):
    from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

    from kit.models import default_target_modules

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=4)
    model = PhiForCausalLM(PhiConfig(**small)) if family == "phi" else LlamaForCausalLM(LlamaConfig(**small))
    assert default_target_modules(model) == expected
