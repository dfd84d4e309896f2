"""Stage field lists: one definition (fitdiff.data.fields), and the configs that spell them out agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fitdiff.config.compose import experiment_names
from fitdiff.data import FIELDS
from fitdiff.data.fields import (
    AUTOENCODER_FIELDS,
    DIFFUSION_FIELDS,
    RECONSTRUCTION_FIELDS,
    REFLECTANCE_MAPS,
    STAGE_FIELDS,
    stage_fields,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_stage_fields_are_sample_fields_without_repeats():
    for stage, fields in STAGE_FIELDS.items():
        assert set(fields) <= set(FIELDS), stage
        assert len(set(fields)) == len(fields), stage
    assert AUTOENCODER_FIELDS == REFLECTANCE_MAPS == ("diffuse", "specular", "normals")
    assert DIFFUSION_FIELDS[:3] == REFLECTANCE_MAPS and {"shape", "identity"} <= set(DIFFUSION_FIELDS)
    assert {"image", "landmarks", "shape", *REFLECTANCE_MAPS} <= set(RECONSTRUCTION_FIELDS)
    assert stage_fields("diffusion") is DIFFUSION_FIELDS
    with pytest.raises(KeyError, match="unknown stage 'vae'"):
        stage_fields("vae")


@pytest.mark.parametrize("name", experiment_names())
def test_composed_experiments_read_a_stage_field_list(name, compose_train):
    cfg = compose_train(name)
    fields = cfg.data.get("fields")
    if "autoencoder" in cfg.tags:
        assert fields is not None and tuple(fields) == AUTOENCODER_FIELDS, name
        model_maps = [names for names in _map_names(OmegaConf.to_container(cfg.model, resolve=False))]
        assert model_maps and all(names == REFLECTANCE_MAPS for names in model_maps), (name, model_maps)
    elif cfg.data._target_ == "fitdiff.data.LatentDataModule":  # pre-encoded latents: their own members
        from fitdiff.data.latents import LATENT_FIELDS

        assert fields is None or set(fields) <= set(LATENT_FIELDS), f"{name}: data.fields {list(fields)}"
    elif fields is not None:
        assert tuple(fields) in STAGE_FIELDS.values(), f"{name}: data.fields {list(fields)} is no stage's list"


def _map_names(node) -> list[tuple[str, ...]]:
    """Every ``maps`` entry in a config tree: the keys of a mapping or the items of a list."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "maps" and isinstance(value, dict):
                found.append(tuple(value))
            elif key == "maps" and isinstance(value, list):
                found.append(tuple(value))
            else:
                found.extend(_map_names(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_map_names(value))
    return found


def test_autoencoder_model_configs_name_the_reflectance_maps_in_order():
    seen = 0
    for path in sorted((EXPERIMENTS / "model").glob("ae_*.yaml")):
        for names in _map_names(OmegaConf.to_container(OmegaConf.load(path))):
            assert names == REFLECTANCE_MAPS, f"{path.name}: maps {names}"
            seen += 1
    assert seen >= 2  # the branched map table and the single-branch ablation at least


def test_the_autoencoder_default_maps_are_the_reflectance_maps():
    from fitdiff.autoencoder import DEFAULT_MAPS

    assert tuple(DEFAULT_MAPS) == REFLECTANCE_MAPS
