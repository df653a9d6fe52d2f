"""Evaluation: real data, student networks, batched augmentation, the training loop, and
``ddformat eval`` with its baselines. Needs torch; the format core never imports it."""
