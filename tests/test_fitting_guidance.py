"""Facial guidance (both rules), recurrence in the sampler, the optimisation fitter and the presets."""

from __future__ import annotations

import math

import pytest
import torch

from fitdiff.autoencoder import BranchedVQAutoencoder
from fitdiff.diffusion import Sampler, ddim_scheduler, dpm_scheduler
from fitdiff.face import make_procedural_shape_model
from fitdiff.face.scene import FaceScene
from fitdiff.face.synthetic_recognizer import RecognizerNet, SyntheticRecognizer
from fitdiff.fitting import (
    FacialGuidance,
    FitLoss,
    GuidanceConfig,
    LossWeights,
    OptimizeConfig,
    Reconstructor,
    SceneParameters,
    available_presets,
    load_preset,
    optimize_latent,
)
from fitdiff.fitting.camera_init import camera_from_landmarks
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout
from fitdiff.ldm.pipeline import FitDiffPipeline
from fitdiff.ldm.unet import ConditionedUNet
from fitdiff.render import PerspectiveCamera, look_at
from fitdiff.render.lighting import ambient_sh

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (64, 64)
K = 6


@pytest.fixture(scope="module")
def pipeline():
    """An untrained but complete pipeline: tiny autoencoder (32x32 maps -> 16x16), tiny SPADE UNet."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = BranchedVQAutoencoder(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer=dict(n_codes=16))
        layout = LatentLayout.from_autoencoder(ae, 32, K)
        unet = ConditionedUNet(in_channels=layout.channels, out_channels=layout.channels, model_channels=16,
                               channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), norm_groups=8,
                               spade_map_channels=8, spade_map_res=4)
    stats = LatentStats(layout, mean=[0.0] * layout.channels, std=[1.0] * layout.channels)
    return FitDiffPipeline(unet, ae.eval(), layout, stats, prediction_type="v_prediction").eval()


@pytest.fixture(scope="module")
def scene():
    return FaceScene(make_procedural_shape_model(n_vertices=600, n_components=K, seed=0))


@pytest.fixture(scope="module")
def recognizer():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return SyntheticRecognizer(RecognizerNet())


def _photo(scene, pipeline, seed: int = 3):
    """A photo of a random latent's face with a known camera, and its 68 landmarks."""
    g = torch.Generator().manual_seed(seed)
    z = pipeline.layout.apply_mask(torch.randn(1, *pipeline.latent_shape, generator=g))
    with torch.no_grad():
        face = pipeline.decode(z)
    rot, trans = look_at(torch.tensor([[120.0, 40.0, 560.0]]), at=torch.tensor([0.0, 0.0, 40.0]))
    camera = PerspectiveCamera.from_fov(rot, trans, SIZE, fov_degrees=25.0, znear=10.0)
    params = SceneParameters(camera, ambient_sh(0.9, 1))
    with torch.no_grad():
        out = scene(face.shape, face.maps["diffuse"], face.maps["specular"], face.maps["normals"], camera,
                    params.lights(), background=0.4)
    return out.image, out.landmarks


def _guidance(pipeline, scene, recognizer, rule: str, scale: float = 0.3, **kw):
    photo, landmarks = _photo(scene, pipeline)
    cfg = load_preset("guided_x0")
    rec = Reconstructor(pipeline, scene, recognizer, cfg)
    target = rec.target(photo, landmarks)
    with torch.no_grad():
        mean = pipeline.decode(torch.zeros(1, *pipeline.latent_shape))
    params = rec.initial_scene(target, mean)
    loss = FitLoss(scene, recognizer, LossWeights(identity=1.0, landmarks=10.0, pixel=1.0, prior=0.01))
    config = GuidanceConfig(rule=rule, scale=scale, scene_steps=0, **kw)
    return FacialGuidance(pipeline.decode, loss, params, target, config), target


@pytest.mark.parametrize("rule", ["eps", "x0"])
def test_one_guided_step_lowers_the_guidance_loss(pipeline, scene, recognizer, rule):
    """The step's corrected output predicts an x0 whose loss is lower than the unguided prediction's."""
    hook, target = _guidance(pipeline, scene, recognizer, rule, scale=0.05)
    sampler = Sampler(ddim_scheduler(), num_inference_steps=10)
    identity = target.identity
    seen = {}

    def record(state):
        if state.index < 7:  # a late step (t = 281 of 1000), where x0 is already well predicted
            return None
        before = state.pred_x0.detach()
        out = hook(state)
        from fitdiff.diffusion.objectives import predict_x0

        seen["before"], seen["after"] = before, predict_x0(state.prediction_type, out, state.x_t.detach(), state.t,
                                                           state.alphas_cumprod)
        raise StopIteration  # one step is enough

    record.needs_grad = hook.needs_grad
    with pytest.raises(StopIteration):
        pipeline.sample(1, sampler, identity=identity, generator=torch.Generator().manual_seed(0), hook=record)
    with torch.no_grad():
        loss_before = hook._loss(seen["before"])[0]
        loss_after = hook._loss(seen["after"])[0]
    assert float(loss_after) < float(loss_before)
    assert len(hook.history) == 1 and hook.history[0]["index"] == 7
    if rule == "x0":  # the step is `scale` latent std in RMS
        rms = (seen["after"] - seen["before"]).pow(2).mean().sqrt()
        assert math.isclose(float(rms), 0.05, rel_tol=1e-3)


def test_guided_range_and_recurrence(pipeline, scene, recognizer):
    hook, target = _guidance(pipeline, scene, recognizer, "x0", start=0.5, stop=1.0, recurrence=3)
    steps = 6
    sampler = Sampler(ddim_scheduler(), num_inference_steps=steps)
    pipeline.sample(1, sampler, identity=target.identity, generator=torch.Generator().manual_seed(0), hook=hook)
    # steps 3, 4, 5 of 6 are guided, each run 3 times
    assert [h["index"] for h in hook.history] == [3, 3, 3, 4, 4, 4, 5, 5, 5]
    # recurrence re-noises with the run's generator: the same seed gives the same sample
    a = pipeline.sample(1, sampler, identity=target.identity, generator=torch.Generator().manual_seed(0), hook=hook)
    b = pipeline.sample(1, sampler, identity=target.identity, generator=torch.Generator().manual_seed(0), hook=hook)
    assert torch.equal(a, b)
    # DPM-Solver++ keeps a multistep history: recurrence is refused with the reason
    with pytest.raises(ValueError, match="single-step scheduler"):
        pipeline.sample(1, Sampler(dpm_scheduler(), num_inference_steps=steps), identity=target.identity,
                        generator=torch.Generator().manual_seed(0), hook=hook)


def test_a_hook_without_repeats_leaves_sampling_unchanged(pipeline):
    sampler = Sampler(ddim_scheduler(), num_inference_steps=5)
    calls = []

    def hook(state):
        calls.append(state.index)
        return None

    a = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4))
    b = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4), hook=hook)
    assert torch.equal(a, b) and calls == [0, 1, 2, 3, 4]


def test_shape_temperature_scales_only_the_shape_channels_start_noise(pipeline):
    """The hook sees x_T at the first step: shape channels scaled by the temperature, maps untouched;
    temperature 1 is plain sampling, bit for bit."""
    sampler = Sampler(ddim_scheduler(), num_inference_steps=3)
    shape = pipeline.layout.shape_slice
    starts = []

    def hook(state):
        if state.index == 0:
            starts.append(state.x_t.detach().clone())
        return None

    plain = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4), hook=hook)
    same = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4), hook=hook, shape_temperature=1.0)
    half = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4), hook=hook, shape_temperature=0.5)
    mean = pipeline.sample(2, sampler, generator=torch.Generator().manual_seed(4), hook=hook, shape_temperature=0.0)
    assert torch.equal(plain, same)
    x_plain, _, x_half, x_mean = starts
    maps = slice(0, pipeline.layout.map_channels)
    assert torch.equal(x_half[:, maps], x_plain[:, maps]) and torch.equal(x_mean[:, maps], x_plain[:, maps])
    assert torch.allclose(x_half[:, shape], 0.5 * x_plain[:, shape]) and x_plain[:, shape].abs().max() > 0.1
    assert torch.equal(x_mean[:, shape], torch.zeros_like(x_mean[:, shape]))
    assert not torch.equal(mean, plain) and not torch.equal(half, plain)
    with pytest.raises(ValueError, match="shape_temperature"):
        pipeline.sample(1, sampler, shape_temperature=1.5)


def test_optimisation_fitter_lowers_the_loss_and_keeps_padding_zero(pipeline, scene, recognizer):
    hook, target = _guidance(pipeline, scene, recognizer, "x0")
    z0 = torch.zeros(1, *pipeline.latent_shape)
    z, history = optimize_latent(z0, pipeline.decode, hook.loss, hook.params, target,
                                 OptimizeConfig(steps=10, lr=0.01), mask=pipeline.layout.apply_mask)
    assert len(history) == 10 and history[-1]["total"] < history[0]["total"]
    assert torch.equal(z, pipeline.layout.apply_mask(z)) and torch.equal(z0, torch.zeros_like(z0))


def test_the_anchor_holds_the_shape_near_the_start_latents(pipeline, scene, recognizer):
    hook, target = _guidance(pipeline, scene, recognizer, "x0")
    g = torch.Generator().manual_seed(5)
    z0 = pipeline.layout.apply_mask(torch.randn(1, *pipeline.latent_shape, generator=g))
    with torch.no_grad():
        start = pipeline.decode(z0).shape
    moved = {}
    for anchor in (0.0, 100.0):
        params = SceneParameters(hook.params.camera(), hook.params.sh.detach().clone())
        z, history = optimize_latent(z0, pipeline.decode, hook.loss, params, target,
                                     OptimizeConfig(steps=10, lr=0.05, anchor=anchor), mask=pipeline.layout.apply_mask)
        with torch.no_grad():
            moved[anchor] = float((pipeline.decode(z).shape - start).pow(2).mean())
        assert ("anchor" in history[0]) == (anchor > 0)
    assert history[0]["anchor"] == 0.0  # the first step decodes the start latent itself
    assert moved[100.0] < 0.5 * moved[0.0] and moved[0.0] > 0
    with pytest.raises(ValueError, match="must be >= 0"):
        OptimizeConfig(anchor=-1.0)


def test_the_conditional_shape_prior_is_centred_on_the_unguided_conditional_mean(pipeline, scene, recognizer):
    photo, landmarks = _photo(scene, pipeline)
    steps = ["sampler.num_inference_steps=4"]
    unguided = Reconstructor(pipeline, scene, recognizer, load_preset("unguided", steps))(
        photo, landmarks, generator=[torch.Generator().manual_seed(0)])
    cfg = load_preset("guided_x0", [*steps, "polish.steps=2", "shape_prior=conditional"])
    assert cfg.describe()["shape_prior"] == "conditional"
    out = Reconstructor(pipeline, scene, recognizer, cfg)(photo, landmarks, generator=[torch.Generator().manual_seed(0)])
    centre = out.target.prior_shape
    # the same start noise, shape channels zeroed (the unguided preset's shape temperature 0): its shape
    assert centre is not None and torch.allclose(centre, unguided.face.shape, atol=1e-5)
    assert float(centre.abs().max()) > 0
    # the loss's prior term is the distance to that centre, not to the mean face
    weights = LossWeights(identity=0.0, landmarks=0.0, pixel=0.0, prior=1.0)
    loss = FitLoss(scene, None, weights)
    _, at_centre = loss(out.face.maps, centre, out.params, out.target)
    _, at_mean = loss(out.face.maps, torch.zeros_like(centre), out.params, out.target)
    assert float(at_centre["prior"]) == 0.0
    assert math.isclose(float(at_mean["prior"]), float(centre.pow(2).mean()), rel_tol=1e-5)
    default = Reconstructor(pipeline, scene, recognizer, load_preset("guided_x0", [*steps, "polish.steps=0"]))(
        photo, landmarks, generator=[torch.Generator().manual_seed(0)])
    assert default.target.prior_shape is None
    with pytest.raises(ValueError, match="needs the diffusion model"):
        load_preset("optimize", ["shape_prior=conditional"])
    with pytest.raises(ValueError, match="shape_prior must be one of"):
        load_preset("guided_x0", ["shape_prior=median"])


@pytest.mark.parametrize("preset", ["unguided", "guided_x0", "guided_eps", "optimize"])
def test_every_preset_reconstructs_a_photo(pipeline, scene, recognizer, preset):
    overrides = ["optimize.steps=3"] if preset == "optimize" else ["sampler.num_inference_steps=4", "polish.steps=2"]
    cfg = load_preset(preset, overrides)
    photo, landmarks = _photo(scene, pipeline)
    out = Reconstructor(pipeline, scene, recognizer, cfg)(photo, landmarks, generator=[torch.Generator().manual_seed(0)])
    assert out.face.maps["diffuse"].shape == (1, 3, 32, 32) and out.face.shape.shape == (1, K)
    assert torch.isfinite(out.latent).all() and out.seconds > 0
    if preset == "optimize":
        assert len(out.history) == 3
    elif preset.startswith("guided"):
        assert [h["index"] for h in out.history if "index" in h] == [2, 3]  # index / 4 >= start 0.3
        assert len([h for h in out.history if "polish" in h]) == 2
    # camera from the photo's landmarks: the fitted landmarks land near the photo's
    projected = out.params.camera().project(scene.model(out.face.shape).index_select(1, scene.model.landmarks_68))[0]
    assert float((projected - landmarks).norm(dim=-1).mean()) < 3.0


def test_presets_load_and_name_their_errors():
    assert {"unguided", "guided_x0", "guided_eps", "optimize"} <= set(available_presets())
    cfg = load_preset("guided_eps", ["guidance.scale=0.7"])
    assert cfg.guidance.rule == "eps" and cfg.guidance.scale == 0.7 and cfg.sampler.num_inference_steps == 25
    assert cfg.describe()["sampler"]["scheduler"] == "DDIMScheduler"
    with pytest.raises(ValueError, match="guided_x0"):
        load_preset("no_such_preset")
    with pytest.raises(ValueError, match="rule"):
        load_preset("guided_x0", ["guidance.rule=sideways"])


def test_camera_init_from_five_landmarks_is_usable(scene, pipeline):
    photo, landmarks = _photo(scene, pipeline)
    model = scene.model
    five_vertices = model(torch.zeros(1, K)).index_select(1, model.landmarks_5)
    from fitdiff.data.landmarks import five_point_landmarks

    five = torch.from_numpy(five_point_landmarks(landmarks.numpy()))
    cam = camera_from_landmarks(five, five_vertices[0], SIZE)
    assert cam.batch_size == 1 and float(-cam.t[0, 2]) > 100.0


def test_presets_load_inside_a_hydra_application():
    """evaluate.py's tables load presets while the application's Hydra is initialised: it must survive."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff.config import register_configs
    from fitdiff.fitting.presets import EXPERIMENTS_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
        assert load_preset("optimize", ["optimize.steps=0"]).optimize.steps == 0
        assert GlobalHydra.instance().is_initialized()
        assert compose("evaluate", overrides=["table=conditioning"]).task_name == "evaluate"
