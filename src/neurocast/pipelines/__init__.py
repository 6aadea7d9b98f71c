"""Pipelines: turn a validated config into a finished run (data -> task -> trainer -> run dir).

This is the layer that touches files: it resolves datasets (running simulations when a
config asks for one), creates run directories and writes summaries. Models, tasks and
the trainer below it never open a file.
"""
