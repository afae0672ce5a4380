"""Fine-tuning: block groups of a backbone, the unfreezing schedule, the callback that applies it,
and the LightningModule that trains a new head (and the unfrozen groups)."""
