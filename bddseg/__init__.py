"""bddseg: the mechanics behind the entry points (data import, models, metrics, sweeps), one idea per module."""
import warnings

# fastai calls torch.jit.script at import, which torch 2.14 deprecates: silenced once here, for every entry point
# (eval.py, train.py, the benches) that imports bddseg before fastai.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
