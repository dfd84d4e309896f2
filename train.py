"""Train a FitDiff stage.

    python train.py experiment=NAME [key=value ...]        # one run, outputs/<task>/runs/<time>/
    python train.py -m experiment=NAME seed=1,2,3          # a sweep (Hydra multirun)
    python train.py --cfg job experiment=NAME              # print the composed config and exit
"""

import hydra
from omegaconf import DictConfig

from fitdiff.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="experiments", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from fitdiff import tasks

    return tasks.run_cli(tasks.train, cfg)


if __name__ == "__main__":
    main()
