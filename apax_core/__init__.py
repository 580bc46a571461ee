"""apax_core: the JAX engine (models, training, MD, uncertainty) under apax_nodes."""

from apax_core.xla_cpu import tune as _tune_xla

_tune_xla()  # before JAX creates its backend: XLA reads its flags then
