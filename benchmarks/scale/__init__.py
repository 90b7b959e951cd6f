"""The scale family (``python -m benchmarks --scale``): prediction speed and peak memory of
scattn's classifiers and their peers on 10k, 100k and 1M resampled Kang 2018 cells, and one
training epoch from the backed 1M-cell file.

Not part of the default ``python -m benchmarks`` run (hours at 1M cells on one thread) and not a
:class:`~benchmarks.suite.tasks.Family`: every measurement runs in a process of its own so that
each peak RSS is one method's.

=====================  ===========================================================================
module                 what it does (each also ``python -m benchmarks.scale.<module>``)
=====================  ===========================================================================
:mod:`.make_data`      the resampled h5ad (and zarr) files, written chunk by chunk
:mod:`.train`          the labelled training set, every method trained and saved once
:mod:`.child`          one measurement (open + predict, predict_proba, one epoch from disk)
:mod:`.run`            the loop over sizes, methods, steps and formats; CSV, markdown, figure
=====================  ===========================================================================
"""
