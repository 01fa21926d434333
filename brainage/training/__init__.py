"""Training: the LightningModule (loss, metrics, schedule), callbacks and the LightningCLI."""
