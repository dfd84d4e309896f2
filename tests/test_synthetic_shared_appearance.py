"""Recognizer renders that wear shared-pool appearances: only the shape tells whose face they are."""

from __future__ import annotations

import numpy as np
import pytest

from fitdiff.synthetic.config import load_shape_model
from fitdiff.synthetic.photo import PhotoRenderer
from fitdiff.synthetic.scene import SceneRanges
from fitdiff.synthetic.subject_job import SubjectJob, generate_subject
from fitdiff.synthetic.subjects import make_subject, shared_appearance, shared_appearance_plan
from fitdiff.synthetic.uv_layout import uv_layout


def test_plan_is_deterministic_and_shuffles_appearances_across_subjects():
    plans = np.stack([shared_appearance_plan(0, i, 8, 16) for i in range(200)])
    assert plans.dtype == np.int64 and plans.min() >= 0 and plans.max() < 16
    np.testing.assert_array_equal(plans[7], shared_appearance_plan(0, 7, 8, 16))
    assert not np.array_equal(plans[7], shared_appearance_plan(1, 7, 8, 16))
    # Every pool member is worn by many different subjects, so it cannot identify any of them.
    wearers = [len({i for i in range(200) if member in plans[i]}) for member in range(16)]
    assert min(wearers) >= 20
    # Subjects do not share one fixed assignment.
    assert len({tuple(p) for p in plans}) == 200
    assert shared_appearance_plan(0, 3, 0, 16).shape == (0,)
    with pytest.raises(ValueError, match="pool"):
        shared_appearance_plan(0, 3, 2, 0)


def _job(split: str, **overrides) -> SubjectJob:
    values = dict(
        seed=0, index=3, split=split, n_photos=2, n_extra=1, n_shared=3, appearance_pool=4, uv_res=16,
        image_res=48, shape_model=None, n_vertices=2000, n_components=10, shape_model_seed=0,
        shape_space="observable", scene=SceneRanges(),
    )
    values.update(overrides)
    return SubjectJob(**values)


def test_training_subject_renders_its_shape_in_pool_appearances(monkeypatch):
    calls = []
    original = PhotoRenderer.render

    def spy(self, shape, maps, scenes):
        calls.append((np.array(shape), maps, len(scenes)))
        return original(self, shape, maps, scenes)

    monkeypatch.setattr(PhotoRenderer, "render", spy)
    job = _job("train")
    result = generate_subject(job)
    members = shared_appearance_plan(0, 3, 3, 4)
    assert result.crops.shape == (2 + 1 + 3, 112, 112, 3)
    np.testing.assert_array_equal(result.crop_appearance, np.concatenate([[-1, -1, -1], members]))

    assert [n for _, _, n in calls] == [2, 1, 3]  # photos, own extra renders, shared renders
    model_layout = uv_layout(load_shape_model(None, 2000, 10, 0), 16)
    own = make_subject(0, 3, model_layout, 10)
    shape, worn, _ = calls[2]
    np.testing.assert_array_equal(shape, own.shape)  # the subject's own shape ...
    for maps, member in zip(worn, members):  # ... wearing pool members, not its own maps
        np.testing.assert_array_equal(maps.diffuse, shared_appearance(0, int(member), model_layout).diffuse)
        assert not np.array_equal(maps.diffuse, own.maps.diffuse)
    # The shared crops differ from the subject's own-appearance crops.
    assert np.abs(result.crops[3:].astype(int) - result.crops[:1].astype(int)).mean() > 1.0


def test_held_out_subjects_get_no_recognizer_crops():
    result = generate_subject(_job("val"))
    assert result.crops.shape[0] == 0 and result.crop_appearance.shape == (0,)
    assert result.images.shape[0] == 2
