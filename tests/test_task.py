"""Task recipes, dense training and the on-disk dense-model cache."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

import autoprune.task as task_mod
from autoprune.errors import UserError
from autoprune.task import TaskRecipe, accuracy, cache_dir, load_task

TINY = dict(model="resnet20:width=4", data="digits", image_size=16, dense_epochs=3)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """A private cache, no tasks left from other tests, one thread (robust on a busy 2-core box)."""
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "envcache"))
    task_mod.clear_task_cache()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    task_mod.clear_task_cache()


def test_recipe_round_trip_and_validation() -> None:
    r = TaskRecipe(model="resnet32", image_size=24, train_limit=100)
    assert TaskRecipe.from_dict(r.to_dict()) == r
    assert pickle.loads(pickle.dumps(r)) == r and hash(r) == hash(TaskRecipe(**r.to_dict()))
    assert TaskRecipe.from_dict({}) == TaskRecipe()
    with pytest.raises(UserError, match="bogus"):
        TaskRecipe.from_dict({"bogus": 1})
    with pytest.raises(UserError, match="dense_epochs"):
        TaskRecipe.from_dict({"dense_epochs": "ten"})


def test_default_dense_epochs_depend_on_the_data() -> None:
    from autoprune.data import load_data

    digits = load_data("digits", image_size=8)
    assert task_mod.dense_epochs(TaskRecipe(), digits) == 10
    assert task_mod.dense_epochs(TaskRecipe(dense_epochs=3), digits) == 3
    other = dataclasses.replace(digits, name="cifar10:/x")
    assert task_mod.dense_epochs(TaskRecipe(), other) == 30
    key = task_mod.training_key
    assert key(TaskRecipe(), digits) == key(TaskRecipe(dense_epochs=10), digits)
    assert key(TaskRecipe(), digits) != key(TaskRecipe(dense_epochs=11), digits)
    assert key(TaskRecipe(), digits) == key(TaskRecipe(val_limit=5), digits)


def test_cache_dir_resolution(tmp_path) -> None:
    assert cache_dir(None) == tmp_path / "envcache"
    assert cache_dir(TaskRecipe()) == tmp_path / "envcache"
    assert cache_dir(TaskRecipe(cache_dir=str(tmp_path / "x"))) == tmp_path / "x"


def test_load_task_trains_once_then_loads_from_cache(tmp_path, monkeypatch) -> None:
    recipe = TaskRecipe(**TINY, cache_dir=str(tmp_path / "c"))
    calls = []
    real_train = task_mod.train_dense

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(task_mod, "train_dense", counting_train)
    task = load_task(recipe)
    assert calls == [1]
    assert task.input_shape == (1, 16, 16) and task.example_inputs(2).shape == (2, 1, 16, 16)
    assert not task.model.training
    assert task.dense_val_accuracy > 0.3 and task.dense_test_accuracy > 0.3  # chance is 0.1
    assert task.dense_val_accuracy == pytest.approx(accuracy(task.model, task.data, task.data.val))
    files = list((tmp_path / "c" / "dense").glob("resnet20_width=4-digits-*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    blob = torch.load(files[0], weights_only=True)
    assert set(blob) >= {"state_dict", "val_accuracy", "test_accuracy", "recipe"}

    assert load_task(recipe) is task  # cached in the process
    task_mod.clear_task_cache()
    again = load_task(recipe)  # a fresh process: loads from disk, no training
    assert calls == [1] and again is not task
    assert files[0].stat().st_mtime_ns == mtime
    assert again.dense_val_accuracy == task.dense_val_accuracy
    for a, b in zip(
        again.model.state_dict().values(), task.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)

    # a val limit reuses the same weights and re-measures val accuracy on the subset
    limited = load_task(TaskRecipe(**TINY, cache_dir=str(tmp_path / "c"), val_limit=50))
    assert calls == [1] and len(limited.data.val) == 50
    assert limited.dense_val_accuracy == pytest.approx(
        accuracy(limited.model, limited.data, limited.data.val)
    )


def test_training_is_deterministic_and_limits_apply(tmp_path) -> None:
    a = load_task(TaskRecipe(**TINY, cache_dir=str(tmp_path / "a"), train_limit=300))
    b = load_task(TaskRecipe(**TINY, cache_dir=str(tmp_path / "b"), train_limit=300))
    assert len(a.data.train) == 300
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    other = load_task(TaskRecipe(**TINY, cache_dir=str(tmp_path / "a"), train_limit=300, seed=1))
    assert not torch.equal(other.model.conv1.weight, a.model.conv1.weight)
    assert len(list((tmp_path / "a" / "dense").glob("*.pt"))) == 2


def test_checkpoint_recipe_skips_training(tmp_path, monkeypatch) -> None:
    trained = load_task(TaskRecipe(**TINY, cache_dir=str(tmp_path / "c"), train_limit=200))
    ckpt = tmp_path / "dense.pt"
    torch.save({"state_dict": trained.model.state_dict()}, ckpt)

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a checkpoint was given")

    monkeypatch.setattr(task_mod, "train_dense", no_training)
    evaluated = []
    real_accuracy = task_mod.accuracy
    monkeypatch.setattr(task_mod, "accuracy", lambda *a, **k: evaluated.append(1) or real_accuracy(*a, **k))
    task = load_task(
        TaskRecipe(**TINY, cache_dir=str(tmp_path / "d"), train_limit=200, checkpoint=str(ckpt))
    )
    assert evaluated == []  # a worker that only scores trials never evaluates the dense model
    assert task.dense_test_accuracy == pytest.approx(trained.dense_test_accuracy)
    assert task.dense_test_accuracy == task.dense_test_accuracy and evaluated == [1]  # once, then kept
    assert not (tmp_path / "d" / "dense").exists()
    with pytest.raises(UserError, match="does not exist"):
        load_task(TaskRecipe(**TINY, checkpoint=str(tmp_path / "missing.pt")))


def test_accuracy_restores_mode_and_rejects_empty(tmp_path) -> None:
    task = load_task(TaskRecipe(**{**TINY, "dense_epochs": 1}, train_limit=100))
    task.model.train()
    value = accuracy(task.model, task.data, task.data.test)
    assert 0.0 <= value <= 1.0 and task.model.training
    task.model.eval()
    empty = task.data.test.take(torch.zeros(0, dtype=torch.int64))
    with pytest.raises(UserError, match="empty"):
        accuracy(task.model, task.data, empty)
    assert list((tmp_path / "envcache" / "dense").glob("*.pt"))  # default cache from the env


def test_the_validation_split_of_a_trained_checkpoint_is_the_one_it_was_trained_beside(tmp_path):
    """`autoprune train --seed 0` then `autoprune search --seed 1`: the search's split is the
    training's, so no candidate is scored on images the dense model learnt."""
    import json

    from autoprune.task import TaskRecipe, split_seed

    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    assert split_seed(TaskRecipe(data="digits", seed=1)) == 1  # no checkpoint
    assert split_seed(TaskRecipe(data="digits", seed=1, checkpoint=str(ckpt))) == 1  # no training record
    ckpt.with_suffix(".json").write_text(json.dumps({"seed": 0, "data": f"imagefolder:{tmp_path}/./data"}))
    assert split_seed(TaskRecipe(data=f"imagefolder:{tmp_path}/data", seed=1, checkpoint=str(ckpt))) == 0
    assert split_seed(TaskRecipe(data="digits", seed=1, checkpoint=str(ckpt))) == 1  # trained on other data
