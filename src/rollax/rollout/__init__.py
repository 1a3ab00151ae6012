"""Batch sources: the batch types every algorithm learns from (`batches.py`), the source
protocol and its registry (`sources.py`), env rollouts and the jitted collector
(`collector.py`, `trajectory.py`), one-step generation groups (`groups.py`), and the host
collector for Gymnasium envs (`host_collector.py`). Nothing is imported here, so registering
a source imports no jax."""
