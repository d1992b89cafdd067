"""avel.models.metrics: evaluation metrics (dense detection mAP, AVE accuracies)."""
