"""The face scene re-renders dataset photos from their ground truth and meta.json, differentiably."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fitdiff.data.sample import FaceSample, decode_sample
from fitdiff.face.scene import DEFAULT_ZNEAR, FaceScene, SceneLights, camera_from_meta, tone_map
from fitdiff.render import DirectionalLights, PerspectiveCamera
from fitdiff.synthetic.generate import SubjectJob, SyntheticConfig, _meta, generate_subject, load_shape_model
from fitdiff.synthetic.photo import photo_background, sensor_noise
from fitdiff.synthetic.scene import SceneRanges

MODEL = dict(n_vertices=3000, n_components=12, seed=0)
IMAGE = 96


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Three photos of one subject made by the dataset generator and round-tripped through the shard
    encoding (PNG, float16 .npy, JSON), with the shape model they were rendered with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = SubjectJob(seed=3, index=1, split="val", n_photos=3, n_extra=0, n_shared=0, appearance_pool=0,
                         uv_res=32, image_res=IMAGE, shape_space="observable",
                         shape_model=None, n_vertices=MODEL["n_vertices"], n_components=MODEL["n_components"],
                         shape_model_seed=MODEL["seed"], scene=SceneRanges())
        result = generate_subject(job)
    finally:
        torch.set_num_threads(threads)
    model = load_shape_model(None, MODEL["n_vertices"], MODEL["n_components"], MODEL["seed"])
    cfg = SyntheticConfig(out=tmp_path_factory.mktemp("scene"), uv_res=32, image_res=IMAGE, seed=3)
    samples = []
    for j in range(len(result.images)):
        sample = FaceSample(
            key=f"{result.id}_{j:03d}", image=result.images[j], diffuse=result.diffuse, specular=result.specular,
            normals=result.normals, shape=result.shape, identity=np.eye(512, dtype=np.float32)[0],
            landmarks=result.landmarks[j], meta=_meta(cfg, result, j, "none", model.model_id),
        )
        samples.append(decode_sample(sample.encode()))
    return model, samples


def _maps(sample: FaceSample) -> dict[str, torch.Tensor]:
    """The stored UV maps as (1, C, R, R) float tensors in their documented ranges."""
    def chw(array: np.ndarray, scale: float) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.float32) / scale).permute(2, 0, 1)[None].contiguous()

    return dict(diffuse=chw(sample.diffuse, 255.0), specular=chw(sample.specular, 255.0),
                normals=chw(sample.normals, 1.0))


def _rerender(model, sample: FaceSample, **scene_options):
    camera, lights = camera_from_meta(sample.meta)
    background = torch.from_numpy(photo_background(sample.meta)).permute(2, 0, 1)[None].float()
    out = FaceScene(model, **scene_options)(torch.from_numpy(sample.shape)[None], **_maps(sample), camera=camera,
                                            lights=lights, background=background)
    return out, background


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@pytest.mark.slow
def test_rerender_matches_the_stored_photo_inside_the_face(stored):
    model, samples = stored
    for sample in samples:
        with torch.no_grad():
            out, _ = _rerender(model, sample)
        render = out.image[0].permute(1, 2, 0).double().numpy() * 255.0
        mask = out.alpha[0, 0].numpy() > 0.5
        assert 0.1 < mask.mean() < 0.9
        photo = sample.image.astype(np.float64)
        # The photo adds sensor noise (std up to 2 levels) and 8-bit rounding to the same render.
        assert _psnr(render[mask], photo[mask]) >= 40.0
        lighting = sample.meta["lighting"]
        noisy = render / 255.0 + sensor_noise(lighting["noise_seed"], lighting["noise_levels"], render.shape)
        rebuilt = np.round(np.clip(noisy, 0.0, 1.0) * 255.0)
        assert np.abs(rebuilt - photo).max() <= 1.0  # the whole photo, background included
        assert (rebuilt == photo).mean() > 0.999
        error = (out.landmarks[0].double() - torch.from_numpy(sample.landmarks).double()).norm(dim=-1)
        assert float(error.max()) < 0.5


@pytest.mark.slow
def test_camera_and_lights_from_meta_batch_like_single_photos(stored):
    model, samples = stored
    camera, lights = camera_from_meta([s.meta for s in samples])
    assert camera.batch_size == lights.batch_size == 3 and camera.image_size == (IMAGE, IMAGE)
    assert camera.znear == samples[0].meta["camera"]["znear"] and lights.gamma == 2.2
    single, single_lights = camera_from_meta(samples[2].meta)
    assert torch.equal(camera.R[2], single.R[0]) and torch.equal(camera.fx[2:], single.fx)
    assert torch.equal(lights.sh[2], single_lights.sh[0]) and torch.equal(lights.exposure[2:], single_lights.exposure)
    # a meta written before znear was recorded falls back to the generator's value
    old = json.loads(json.dumps(samples[0].meta))
    del old["camera"]["znear"]
    assert camera_from_meta(old)[0].znear == DEFAULT_ZNEAR


@pytest.mark.slow
def test_camera_from_meta_rejects_incomplete_or_mixed_metas(stored):
    _, samples = stored
    with pytest.raises(KeyError, match="lighting"):
        camera_from_meta({"camera": samples[0].meta["camera"]})
    other = json.loads(json.dumps(samples[1].meta))
    other["camera"]["image_size"] = [64, 64]
    with pytest.raises(ValueError, match="image_size"):
        camera_from_meta([samples[0].meta, other])
    with pytest.raises(ValueError, match="at least one"):
        camera_from_meta([])


@pytest.mark.slow
def test_background_shows_only_where_the_face_is_not(stored):
    model, samples = stored
    with torch.no_grad():
        out, background = _rerender(model, samples[0])
        camera, lights = camera_from_meta(samples[0].meta)
        black = FaceScene(model)(torch.from_numpy(samples[0].shape)[None], **_maps(samples[0]), camera=camera,
                                 lights=lights, background=0.0)
    outside = out.alpha == 0
    assert torch.equal(out.image[outside.expand_as(out.image)], background[outside.expand_as(background)])
    inside = (out.alpha == 1).expand_as(out.image)
    assert torch.equal(out.image[inside], black.image[inside])
    assert torch.equal(black.image[~inside], torch.zeros_like(black.image[~inside]))
    assert torch.equal(out.radiance[~inside], torch.zeros_like(out.radiance[~inside]))


@pytest.mark.slow
def test_gradients_reach_every_input(stored):
    model, samples = stored
    torch.manual_seed(0)
    camera0, lights0 = camera_from_meta([s.meta for s in samples[:2]])
    maps = _maps(samples[0])
    leaves = {
        "shape": torch.from_numpy(np.stack([s.shape for s in samples[:2]])),
        **{name: value.expand(2, -1, -1, -1).clone() for name, value in maps.items()},
        "R": camera0.R, "t": camera0.t, "fx": camera0.fx, "fy": camera0.fy, "cx": camera0.cx, "cy": camera0.cy,
        "sh": lights0.sh, "direction": lights0.directional.direction[:, 0],
        "color": lights0.directional.color[:, 0], "intensity": lights0.directional.intensity[:, 0],
        "exposure": lights0.exposure,
    }
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in leaves.items()}
    camera = PerspectiveCamera(leaves["R"], leaves["t"], leaves["fx"], leaves["fy"], leaves["cx"], leaves["cy"],
                               camera0.image_size, znear=camera0.znear)
    lights = SceneLights(
        sh=leaves["sh"],
        directional=DirectionalLights(leaves["direction"], leaves["color"], leaves["intensity"]),
        exposure=leaves["exposure"], shininess=lights0.shininess, gamma=lights0.gamma,
    )
    out = FaceScene(model, soft_sigma=0.5)(leaves["shape"], leaves["diffuse"], leaves["specular"],
                                           leaves["normals"], camera, lights, background=0.3)
    assert ((out.alpha > 0) & (out.alpha < 1)).any()  # the soft band is on
    weights = torch.rand_like(out.image)
    loss = (out.image * weights).sum() + (out.landmarks * torch.rand_like(out.landmarks)).sum()
    loss.backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None, name
        assert torch.isfinite(leaf.grad).all(), name
        assert leaf.grad.abs().sum() > 0, name


def test_tone_map_is_the_documented_curve():
    radiance = torch.tensor([0.0, 0.25, 0.5, 2.0]).view(1, 4, 1, 1)
    shown = tone_map(radiance, torch.tensor([2.0]), 2.2).flatten()
    expected = torch.tensor([0.0, 0.5, 1.0, 1.0]) ** (1 / 2.2)
    assert torch.allclose(shown, expected, atol=3e-4)  # 0 is lifted to 1e-8 ** (1 / 2.2) ~ 2e-4
    x = torch.tensor([0.0, 1e-12, 0.3]).view(1, 3, 1, 1).requires_grad_(True)
    tone_map(x, torch.ones(1), 2.2).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.slow
def test_scene_rejects_mismatched_batches(stored):
    model, samples = stored
    camera, lights = camera_from_meta([s.meta for s in samples[:2]])
    maps = _maps(samples[0])
    with pytest.raises(ValueError, match="shape"):
        FaceScene(model)(torch.zeros(3, model.n_components), **maps, camera=camera, lights=lights)
    _, one_light = camera_from_meta(samples[0].meta)
    with pytest.raises(ValueError, match="lights batch"):
        FaceScene(model)(torch.zeros(2, model.n_components), **maps, camera=camera, lights=one_light)
    with pytest.raises(ValueError, match="landmarks"):
        FaceScene(model, landmarks="17")
    with pytest.raises(ValueError, match="normal_space"):
        FaceScene(model, normal_space="world")
