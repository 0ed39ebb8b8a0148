"""`python -m rlhf ...` (needed under `accelerate launch -m rlhf ...`)."""

from rlhf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
