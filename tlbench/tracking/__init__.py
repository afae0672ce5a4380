"""Experiment tracking beyond results.json: Weights & Biases, set up for clusters without internet."""
