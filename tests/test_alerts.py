"""Each alert rule, firing and not firing, with the evidence a user reads."""
from acestep_viz.dashboard.alerts import Thresholds, alerts

LIMITS = Thresholds(warmup_steps=100, window_steps=200, adapter_min=1e-4, adapter_growth=0.01, rank_share=0.5,
                    drift_min=0.01)
STEPS = [0, 100, 200, 300, 400]


def adapter(**layers):
    return {name: {"step": STEPS[:len(values)], "value": values} for name, values in layers.items()}


def kinds(found):
    return [alert.kind for alert in found]


def test_an_adapter_under_the_minimum_after_warm_up_does_not_move():
    [alert] = alerts(adapter(q=[0.0, 0.0, 2e-5, 2e-5, 2e-5], k=[0.0, 0.0, 0.0, 1e-5, 1e-5]), None, LIMITS)
    assert alert.kind == "adapter_flat" and alert.title == "The adapter does not move"
    assert alert.evidence == "largest update size 0.00002 (q) at step 400, under 0.0001 on every layer since step 0"


def test_since_names_the_step_from_which_every_layer_stayed_under():
    [alert] = alerts(adapter(q=[0.0, 0.5, 2e-5, 2e-5, 2e-5]), None, LIMITS)
    assert alert.evidence.endswith("since step 200")


def test_nothing_fires_during_warm_up():
    assert alerts({"q": {"step": [0, 50], "value": [0.0, 0.0]}}, None, LIMITS) == []


def test_one_layer_over_the_minimum_is_enough_to_stay_quiet():
    assert alerts(adapter(q=[0.0, 0.001, 0.002, 0.004, 0.008], k=[0.0] * 5), None, LIMITS) == []


def test_an_adapter_that_stopped_growing_on_every_layer_is_flagged():
    [alert] = alerts(adapter(q=[0.0, 0.01, 0.02, 0.02, 0.0201], k=[0.0, 0.01, 0.03, 0.03, 0.03]), None, LIMITS)
    assert alert.kind == "adapter_stalled"
    assert alert.evidence == ("update sizes grew at most 0.50% (q) between steps 200 and 400, "
                              "under 1.00% on every layer")


def test_growth_needs_a_measurement_a_window_back_after_warm_up():
    # latest 300: the window starts at 100, the end of warm-up, but a stalled adapter there is too early to tell
    assert kinds(alerts(adapter(q=[0.0, 0.02, 0.02, 0.02]), None, Thresholds(warmup_steps=150))) == []


def test_a_rank_under_the_share_of_its_start_is_a_collapse():
    quality = {"lora": {"step": [0, 200, 400], "effective_rank": [12.0, 9.0, 5.5]},
               "latent": {"step": [0, 400], "effective_rank": [8.0, 7.9]}}
    [alert] = alerts(None, quality, LIMITS)
    assert alert.kind == "collapse" and alert.title == "The LoRA space is collapsing"
    assert alert.evidence == "effective rank 5.5 at step 400, under 50% of its first value 12 (step 0)"


def test_a_falling_rank_during_warm_up_is_not_flagged_yet():
    quality = {"lora": {"step": [0, 50], "effective_rank": [12.0, 2.0]}}
    assert alerts(None, quality, LIMITS) == []


def test_a_rank_above_the_share_is_fine_and_missing_ranks_are_skipped():
    quality = {"lora": {"step": [0, 200, 400], "effective_rank": [12.0, None, 6.5]},
               "prompt": {"step": [0, 400], "lora_drift": [None, None]}}
    assert alerts(None, quality, LIMITS) == []


def test_a_lora_map_whose_drift_stopped_growing_is_flagged():
    quality = {"lora": {"step": [0, 100, 200, 300, 400], "lora_drift": [0.0, 0.1, 0.2, 0.205, 0.209]}}
    [alert] = alerts(None, quality, LIMITS)
    assert alert.kind == "map_still"
    assert alert.evidence == "LoRA drift 0.209 at step 400, grew 0.009 since step 200 (under 0.01)"


def test_a_growing_drift_or_a_short_history_does_not_fire():
    growing = {"lora": {"step": [0, 200, 400], "lora_drift": [0.0, 0.1, 0.2]}}
    short = {"lora": {"step": [0, 150], "lora_drift": [0.0, 0.0]}}
    assert alerts(None, growing, LIMITS) == [] and alerts(None, short, LIMITS) == []


def test_every_rule_can_fire_at_once_adapter_first():
    quality = {"lora": {"step": [0, 200, 400], "effective_rank": [10.0, 6.0, 2.0], "lora_drift": [0.0, 0.0, 0.0]}}
    assert kinds(alerts(adapter(q=[0.0] * 5), quality, LIMITS)) == ["adapter_flat", "collapse", "map_still"]
