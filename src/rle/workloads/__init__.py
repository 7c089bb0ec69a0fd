"""Workloads: LightningModules and their data (DistilGPT-2, synthetic load)."""
