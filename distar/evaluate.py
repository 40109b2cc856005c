"""Entry point: ``python -m distar.evaluate --help``."""

from distar.evaluation.cli import main

if __name__ == "__main__":
    main()
