"""The adapter's update size ||scale * B A||_F / ||W||_F: the maths by hand, on real peft layers, in the tap."""
import math

import pytest
import torch
from acestep_viz.trainer_plugin import adapter_size, attach
from acestep_viz.trainer_plugin.adapter_size import AdapterProbe, batches_of, lora_parts, low_rank_norm, update_size
from acestep_viz.trainer_plugin.publisher import ErrorLog, MemoryPublisher
from peft import LoraConfig, get_peft_model
from torch import nn


def test_low_rank_norm_matches_a_hand_computed_product():
    # B A = [[1, 2], [3, 4]] @ [[1, 0, 1], [0, 1, 1]] = [[1, 2, 3], [3, 4, 7]]: squares sum to 88
    b = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert low_rank_norm(b, a).item() == pytest.approx(math.sqrt(88))


def test_update_size_scales_and_divides_by_the_weight_norm():
    b = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    weight = torch.full((2, 3), 2.0)  # ||W||_F = sqrt(6 * 4)
    size = update_size(b, a, 0.5, weight.norm())
    assert size.item() == pytest.approx(0.5 * math.sqrt(88) / math.sqrt(24))


def test_update_size_equals_the_dense_product_for_random_factors():
    torch.manual_seed(0)
    b, a, weight = torch.randn(40, 6), torch.randn(6, 30), torch.randn(40, 30)
    dense = torch.linalg.norm(2.0 * b @ a) / torch.linalg.norm(weight)
    assert update_size(b, a, 2.0, weight.norm()).item() == pytest.approx(dense.item(), rel=1e-5)


def test_a_zero_b_gives_zero_not_nan():
    assert update_size(torch.zeros(5, 2), torch.randn(2, 4), 2.0, torch.tensor(3.0)).item() == 0.0


def small_model(**config) -> nn.Module:
    torch.manual_seed(1)
    base = nn.Sequential()
    base.add_module("q_proj", nn.Linear(12, 10))
    base.add_module("other", nn.Linear(10, 10))
    return get_peft_model(base, LoraConfig(target_modules=["q_proj"], **config))


def dense_size(model: nn.Module, scale: float) -> float:
    layer = model.base_model.model.q_proj
    delta = scale * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    return (torch.linalg.norm(delta) / torch.linalg.norm(layer.base_layer.weight)).item()


def trained(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # peft starts B at zero; give it a value as training would
        torch.manual_seed(2)
        model.base_model.model.q_proj.lora_B["default"].weight.normal_()
    return model


@pytest.mark.parametrize("config, scale", [
    (dict(r=4, lora_alpha=8), 8 / 4),  # peft's scaling alpha / r
    (dict(r=4, lora_alpha=8, use_rslora=True), 8 / math.sqrt(4)),  # rslora: alpha / sqrt(r)
])
def test_a_peft_layer_is_found_and_measured_with_its_scaling(config, scale):
    model = trained(small_model(**config))
    parts, lycoris = lora_parts(model)
    assert [p.name for p in parts] == ["base_model.model.q_proj"] and lycoris == 0
    part = parts[0]
    assert part.scale() == pytest.approx(scale)
    size = update_size(part.lora_b, part.lora_a, part.scale(), part.base_weight.norm()).item()
    assert size == pytest.approx(dense_size(model, scale), rel=1e-5)


def test_a_dora_layer_reports_its_low_rank_part():
    model = trained(small_model(r=4, lora_alpha=8, use_dora=True))
    part = lora_parts(model)[0][0]
    size = update_size(part.lora_b, part.lora_a, part.scale(), part.base_weight.norm()).item()
    assert size == pytest.approx(dense_size(model, 2.0), rel=1e-5)


def test_the_probe_sends_one_message_for_all_layers_on_due_steps():
    model = trained(small_model(r=4, lora_alpha=8))
    sent = MemoryPublisher()
    probe = AdapterProbe(model, "run-a", every=5, publish=sent.publish, errors=ErrorLog())
    assert [step for step in range(12) if probe.due(step)] == [0, 5, 10]
    assert probe.measure(5)
    [message] = sent.adapter
    assert (message.run, message.step) == ("run-a", 5)
    assert message.layers == {"base_model.model.q_proj": pytest.approx(dense_size(model, 2.0), rel=1e-5)}


def mixed_model() -> nn.Module:
    """Five adapted layers of three shapes, interleaved, each with its own trained B."""
    torch.manual_seed(3)
    base = nn.Sequential()
    for name, (fan_in, fan_out) in zip("abcde", [(12, 10), (16, 10), (12, 10), (16, 8), (12, 10)]):
        base.add_module(f"{name}_proj", nn.Linear(fan_in, fan_out))
    model = get_peft_model(base, LoraConfig(target_modules=[f"{n}_proj" for n in "abcde"], r=4, lora_alpha=8))
    with torch.no_grad():
        for name in "abcde":
            getattr(model.base_model.model, f"{name}_proj").lora_B["default"].weight.normal_()
    return model


def test_layers_measured_together_by_shape_give_each_layers_own_size_in_the_models_order():
    model = mixed_model()
    parts = lora_parts(model)[0]
    assert batches_of(parts) == [[0, 2, 4], [1], [3]]
    sent = MemoryPublisher()
    assert AdapterProbe(model, "run-a", every=1, publish=sent.publish, errors=ErrorLog()).measure(0)
    [message] = sent.adapter
    expected = {p.name: update_size(p.lora_b, p.lora_a, p.scale(), p.base_weight.norm()).item() for p in parts}
    assert list(message.layers) == list(expected)
    assert message.layers == {name: pytest.approx(value, rel=1e-5) for name, value in expected.items()}


def test_batches_stay_under_the_stacking_limit(monkeypatch):
    parts = lora_parts(mixed_model())[0]
    one_layer = 4 * (parts[0].lora_a.numel() + parts[0].lora_b.numel())
    monkeypatch.setattr(adapter_size, "MAX_STACK_BYTES", 2 * one_layer)
    assert batches_of(parts) == [[0, 2], [4], [1], [3]]


def test_a_model_without_lora_layers_sends_nothing():
    sent = MemoryPublisher()
    probe = AdapterProbe(nn.Linear(3, 3), "run-a", every=1, publish=sent.publish, errors=ErrorLog())
    assert not probe.active and not probe.measure(0) and sent.adapter == []


def test_an_error_is_counted_not_raised():
    model = trained(small_model(r=4, lora_alpha=8))
    errors = ErrorLog()
    probe = AdapterProbe(model, "run-a", every=1, publish=MemoryPublisher().publish, errors=errors)
    model.base_model.model.q_proj.scaling["default"] = "not a number"
    assert not probe.measure(0)
    assert errors.as_dict() == {"adapter_size": 1}


def test_the_tap_measures_once_per_due_step_at_its_start():
    model = trained(small_model(r=4, lora_alpha=8))
    sent = MemoryPublisher()
    tap = attach(model, preset=None, spaces={"lora": ["*q_proj"]}, publisher=sent, adapter_every=2, strict=True)
    with tap:
        for step in range(5):
            for micro_batch in range(2):  # gradient accumulation: the same global step twice
                with tap.step(step, micro_batch):
                    model(torch.randn(3, 12))
    assert [m.step for m in sent.adapter] == [0, 2, 4]


def test_adapter_every_zero_turns_it_off():
    model = trained(small_model(r=4, lora_alpha=8))
    sent = MemoryPublisher()
    with attach(model, preset=None, spaces={"lora": ["*q_proj"]}, publisher=sent, adapter_every=0) as tap:
        with tap.step(0):
            model(torch.randn(3, 12))
    assert sent.adapter == [] and len(sent.frames) == 1
