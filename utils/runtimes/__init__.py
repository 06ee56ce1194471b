"""Which engine runs a model (OpenVINO, PyTorch, ncnn) and at which precision, and OpenVINO's
convert-once model cache. Below :mod:`utils.backends`: backends ask here, never the other way round.

- :mod:`utils.runtimes.policy`: what ``auto`` means on this machine for a backend's declared runtimes
  (``utils.settings.SPECS[name].runtimes``), and refusals of combinations that cannot run.
- :mod:`utils.runtimes.ov_core`: the OpenVINO core, the CPU's capability report, compile settings.
- :mod:`utils.runtimes.ir_cache`: torch module -> OpenVINO IR once per weights, then reused.
"""
