"""``python -m yolor_lightning [overrides]``: train and evaluate with the composed config."""

from yolor_lightning.train import main

if __name__ == "__main__":
    main()
