"""Rebuild the pretrained prior shipped in impartial/priors/ (see impartial/prior.py).

    .venv/bin/python scripts/build_prior.py [--minutes 30] [--seed 0]

Deterministic for a seed up to the number of steps the time budget allows on the machine.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from impartial.prior import pretrain, prior_config, prior_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=prior_path(prior_config()))
    args = parser.parse_args()

    def progress(step: int, elapsed: float, loss: float) -> None:
        print(f"step {step:6d}  {elapsed / 60:5.1f} min  loss {loss:.4f}", flush=True)

    print(f"wrote {pretrain(args.out, args.minutes, args.seed, on_progress=progress)}")


if __name__ == "__main__":
    main()
