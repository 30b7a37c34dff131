"""conf/data/: data= picks a data set's file like model=, method= and distribution= do."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from orchestrator.compose import compose_trial, conf_dir, group_options
from orchestrator.errors import UsageError
from orchestrator.sweep import expand, trial_key
from trainers.data import DATASETS
from trainers.data.layout import FROM_DISK


def test_there_is_one_file_per_data_set_and_it_names_it():
    assert group_options("data") == sorted(DATASETS)
    for name in DATASETS:
        spec = OmegaConf.to_container(OmegaConf.load(conf_dir() / "data" / f"{name}.yaml"))
        assert isinstance(spec, dict)
        assert spec["name"] == name
        assert set(spec) == {"name", "root", "augment"}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_data_equals_name_gives_the_same_trial_as_data_dot_name(name, monkeypatch):
    for variable in ("MNIST_ROOT", "CIFAR10_ROOT", "IMAGENET_ROOT", "WIKITEXT103_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    by_group = compose_trial([f"data={name}"])
    by_key = compose_trial([f"data.name={name}"])
    assert by_group.data == by_key.data
    assert trial_key(by_group) == trial_key(by_key)


def test_a_root_given_on_the_command_line_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", "/from/env")
    assert compose_trial(["data=cifar10"]).data.root == "/from/env"
    cfg = compose_trial(["model=wrn22_2", "data=cifar10", "data.root=/data/cifar10"])
    assert (cfg.data.name, cfg.data.root) == ("cifar10", "/data/cifar10")


@pytest.mark.parametrize("name", sorted(FROM_DISK))
def test_each_data_set_read_from_disk_takes_its_root_from_a_variable(name, monkeypatch):
    variable = f"{name.upper()}_ROOT"
    monkeypatch.setenv(variable, f"/srv/{name}")
    assert compose_trial([f"data={name}"]).data.root == f"/srv/{name}"


def test_the_model_file_still_sets_its_reference_data_without_data_equals():
    assert compose_trial(["model=wrn22_2"]).data.name == "cifar10"
    assert compose_trial([]).data.name == "mnist5k"
    gru = compose_trial(["model=char_gru", "data=wikitext103"])
    assert (gru.data.name, gru.data.seq_len) == ("wikitext103", 512)  # the model's seq_len


def test_data_glob_sweeps_every_data_set():
    trials = expand(["data=glob(*)"])
    assert sorted(t.config.data.name for t in trials) == sorted(DATASETS)
    assert sorted(t.swept["data"] for t in trials) == sorted(DATASETS)


def test_a_wrong_data_value_lists_the_files_like_the_other_groups():
    with pytest.raises(UsageError) as data:
        compose_trial(["data=cifar100"])
    assert str(data.value) == f"data='cifar100' is not allowed: one of {sorted(DATASETS)}"
    with pytest.raises(UsageError) as model:
        compose_trial(["model=nope"])
    assert str(model.value).startswith("model='nope' is not allowed: one of [")
