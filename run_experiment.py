"""Run the PRo-MoE experiment: ``python run_experiment.py [--preset NAME] [--output-dir DIR] [key=value ...]``."""

import sys

from promoe.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
