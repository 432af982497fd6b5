"""Training: configs (`config`), the run directory (`run`) and the training loop (`trainer`)."""
