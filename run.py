"""Launch MAGI with Hydra: ``python run.py profile=production prompt="..."``.

Sweeps: ``python run.py -m profile=development,production task=bench``.
Show the composed config: ``python run.py --cfg job profile=fast-only``.
"""

import hydra
from omegaconf import DictConfig

from magi.app import main as magi_main


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    return magi_main(cfg)


if __name__ == "__main__":
    main()
