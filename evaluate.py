"""Evaluate a trained FitDiff checkpoint.

    python evaluate.py experiment=NAME ckpt_path=/path/to/checkpoint.ckpt
"""

import hydra
from omegaconf import DictConfig

from fitdiff.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="experiments", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from fitdiff import tasks

    return tasks.run_cli(tasks.evaluate, cfg)


if __name__ == "__main__":
    main()
