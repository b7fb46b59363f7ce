"""bddseg: the mechanics behind the entry points (data import, models, metrics, sweeps), one idea per module."""
