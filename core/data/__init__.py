"""The data stage: rows in, encoded and masked training examples out, for compile, `ftc data` and train.py alike."""
