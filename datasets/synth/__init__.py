"""The synthetic audio-visual benchmark (the embedded default dataset); see :mod:`.generate`."""

from avel.datasets.synth.generate import SynthConfig, generate, plan_dataset

__all__ = ["SynthConfig", "generate", "plan_dataset"]
