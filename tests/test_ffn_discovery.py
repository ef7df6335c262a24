import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.ffn import discover
from ifprune.core.tiny import TINY_ARCHS, tiny_model

EXPECTED = {"llama": "gated", "mistral": "gated", "qwen2": "gated", "qwen3": "gated", "gemma": "gated",
            "gemma2": "gated", "gemma3": "gated", "phi3": "fused-gated", "gpt_neox": "plain", "gpt2": "plain-conv1d"}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_each_family_is_found_by_modules(arch):
    layout = discover(tiny_model(arch, layers=3))
    assert layout.family.name == EXPECTED[arch]
    assert layout.num_layers == 3 and layout.d_ffn == 48
    per_channel = layout.params_per_channel()
    # gated: gate row + up row + down column (+ up biases for plain MLPs)
    assert per_channel in (3 * 32, 2 * 32 + 1)


def test_unsupported_architecture_names_the_supported_families():
    from transformers import AutoModelForCausalLM, OPTConfig

    cfg = OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2,
                    word_embed_proj_dim=16, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(IfpruneError, match=r"unsupported architecture OPTForCausalLM.*Llama.*Phi-3.*GPT-2"):
        discover(model)


def test_layout_ignores_model_name():
    """Renaming the class (as a fine-tune with a custom name would) does not change discovery."""
    model = tiny_model("llama")
    model.__class__ = type("MyCustomName", (type(model),), {})
    assert discover(model).family.name == "gated"
    assert isinstance(model(torch.tensor([[1, 2, 3]])).logits, torch.Tensor)
