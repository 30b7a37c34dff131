"""Per-layer sparsity overrides (distribution.custom, SPEC §2) from the command line and YAML:
layer names contain dots, so they are keys of their own, validated against the model."""

from __future__ import annotations

import shutil

import pytest

from orchestrator.compose import compose_trial, conf_dir
from orchestrator.errors import UsageError
from orchestrator.sweep import expand, trial_key
from trainers.build import build_plan


def test_one_layer_or_a_mapping_sets_the_layers_sparsity():
    one = compose_trial(["distribution.custom.fc1.weight=0.5", "sparsity=0.9"])
    both = compose_trial(["distribution.custom={fc1.weight:0.5,fc3.weight:0.2}"])
    assert one.distribution.custom == {"fc1.weight": 0.5}
    assert both.distribution.custom == {"fc1.weight": 0.5, "fc3.weight": 0.2}
    plan = build_plan(one)
    assert plan.sparsities["fc1.weight"] == 0.5 and plan.sparsities["fc2.weight"] > 0.9
    assert trial_key(one) != trial_key(compose_trial(["sparsity=0.9"]))


def test_a_wrong_layer_name_lists_the_real_ones():
    with pytest.raises(UsageError) as info:
        compose_trial(["distribution.custom.fc9.weight=0.5"])
    message = str(info.value)
    assert "distribution.custom='fc9.weight' is not allowed" in message
    assert "['fc1.weight', 'fc2.weight', 'fc3.weight']" in message


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("distribution.custom.fc1.weight=1.5", "distribution.custom.fc1.weight=1.5 is not allowed"),
        ("distribution.custom.fc1.weight=half", "'half' is not allowed: a number in [0, 1)"),
        ("distribution.custom=0.5", "a mapping of layer names to sparsities"),
    ],
)
def test_bad_values_are_usage_errors(override, says):
    with pytest.raises(UsageError) as info:
        compose_trial([override])
    assert says in str(info.value)


def test_a_layers_sparsity_can_be_swept():
    trials = expand(["distribution.custom.fc1.weight=0.5,0.7", "seed=0"])
    assert [t.config.distribution.custom for t in trials] == [
        {"fc1.weight": 0.5},
        {"fc1.weight": 0.7},
    ]
    assert trials[0].swept["distribution.custom.fc1.weight"] == 0.5
    assert len({t.key for t in trials}) == 2


def test_a_distribution_file_can_set_layers(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "distribution" / "erk_fc1.yaml").write_text("name: erk\ncustom:\n  fc1.weight: 0.5\n")
    monkeypatch.setenv("RIGL_CONF", str(conf))
    cfg = compose_trial(["distribution=erk_fc1", "distribution.custom.fc2.weight=0.3"])
    assert cfg.distribution.custom == {"fc1.weight": 0.5, "fc2.weight": 0.3}
