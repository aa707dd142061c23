"""Conda environments for PyTorch: specs, variants, engines, locks, validation (``tk env``).

spec.py           read environment.yml + x-tk, schema errors with line numbers (pure)
variants.py       render a spec for cpu / cuda-X.Y, pick the variant (pure)
facts.py          CUDA driver table and channel limits (pure data)
gpu.py            NVML / nvidia-smi detection and output parsing
lock.py           the lock file (engine-neutral)
engine_rattler.py solve and install with py-rattler (default engine)
engine_conda.py   conda / mamba / micromamba command lines
locations.py      where environments live; the completion marker
validate.py       probes run with the environment's python, and their evaluation
service.py        what the commands do, tying the above together
localchannel.py   build and index small real conda packages (tests, benchmarks)
errors.py         the errors of this package
"""
