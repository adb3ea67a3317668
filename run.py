"""Launch MAGI with Hydra: ``python run.py profile=production prompt="..."``.

Sweeps: ``python run.py -m profile=development,production task=bench``.
Show the composed config: ``python run.py --cfg job profile=fast-only``.
"""

import hydra
from omegaconf import DictConfig

from magi.app import main as magi_main
from magi.config.compose import default_conf_dir


# conf/ beside this file, or $MAGI_CONF_DIR: the same folder magi and magi.compose use.
@hydra.main(version_base="1.3", config_path=str(default_conf_dir()), config_name="config")
def main(cfg: DictConfig) -> object:
    return magi_main(cfg)


if __name__ == "__main__":
    main()
