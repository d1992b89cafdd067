"""Training application: config, trainer, tasks (dense localization, AVE)."""
