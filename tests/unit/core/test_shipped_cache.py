"""Cache entries shipped with the package (``cache.SHIPPED_KINDS``): read where the disk cache has
no entry under the same name, never removed, never read for another kind or another key."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_core.core import cache as C


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    d = tmp_path / "shipped"
    monkeypatch.setattr(C, "shipped_dir", lambda: d)
    return d


def _boom():
    raise AssertionError("computed although a shipped entry stands for it")


def test_a_shipped_json_entry_is_read_instead_of_computed(tmp_path, shipped):
    path = C.entry_path(tmp_path / "cache", "known", "model", "questions")
    assert not C.is_cached(path)
    (shipped / "known").mkdir(parents=True)
    (shipped / "known" / path.name).write_text(json.dumps(["q1", "q3"]))
    assert C.is_cached(path) and C.cached_json(path, _boom) == ["q1", "q3"]
    assert not path.exists()  # read from the package, not copied
    other = C.entry_path(tmp_path / "cache", "known", "model", "other questions")  # another key: computed
    assert C.cached_json(other, lambda: ["q2"]) == ["q2"] and other.exists()


def test_only_the_shipped_kinds_are_read(tmp_path, shipped):
    path = C.entry_path(tmp_path / "cache", "clean_nll", "x")
    (shipped / "clean_nll").mkdir(parents=True)
    (shipped / "clean_nll" / path.name).write_text("1.5")
    assert not C.is_cached(path) and C.cached_json(path, lambda: 2.5) == 2.5


def test_an_unreadable_shipped_entry_is_computed_and_kept(tmp_path, shipped):
    path = C.entry_path(tmp_path / "cache", "known", "bad")
    (shipped / "known").mkdir(parents=True)
    bad = shipped / "known" / path.name
    bad.write_text("{not json")
    assert C.cached_json(path, lambda: ["fresh"]) == ["fresh"] and bad.exists() and path.exists()


def test_shipped_tensors(tmp_path, shipped):
    from safetensors.torch import save_file

    path = C.entry_path(tmp_path / "cache", "feature_scores", "s", suffix=".safetensors")
    (shipped / "feature_scores").mkdir(parents=True)
    save_file({"forget_value": torch.arange(4.0)}, str(shipped / "feature_scores" / path.name))
    got = C.cached_tensors(path, _boom)
    assert torch.equal(got["forget_value"], torch.arange(4.0)) and not path.exists()
