"""``python -m dishgen ...``: the same as the ``dishgen`` command (handy under ``accelerate launch``)."""

from dishgen.cli import main

if __name__ == "__main__":
    main()
