"""Launch MAGI with Hydra: ``python run.py profile=production prompt="..."``.

Sweeps: ``python run.py -m profile=development,production task=bench``.
Show the composed config: ``python run.py --cfg job profile=fast-only``.
"""

import sys

try:
    import hydra
    from omegaconf import DictConfig

    from magi.app import launch
    from magi.app import main as magi_main
    from magi.config.compose import default_conf_dir
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: one line, status 130
    print("interrupted", file=sys.stderr)
    sys.exit(130)


# conf/ beside this file, or $MAGI_CONF_DIR: the same folder magi and magi.compose use.
@hydra.main(version_base="1.3", config_path=str(default_conf_dir()), config_name="config")
def main(cfg: DictConfig) -> object:
    return magi_main(cfg)


if __name__ == "__main__":
    launch(main)  # checks the config files first; Ctrl-C exits 130 with one line
