"""Feature extraction: hooks that pool each tapped layer, the predict-time LightningModule,
the on-disk FeatureStore, and FNE post-processing."""
